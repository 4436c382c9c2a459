"""The public T3 API: parameters, bad input, seeds, token clean-up."""

import pytest

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.t3.llama.tokens import clean_speech_tokens


@pytest.mark.parametrize("kwargs,message", [
    ({"texts": ""}, "text is empty"),
    ({"texts": "   "}, "text is empty"),
    ({"texts": []}, "non-empty list"),
    ({"texts": ["ok", 3]}, "text 1 must be a str"),
    ({"texts": "word " * 3000}, "tokens long; the limit is 2048"),
    ({"texts": "Hi.", "temperature": 2.5}, r"temperature must be in \[0.0, 2.0\]"),
    ({"texts": "Hi.", "temperature": float("nan")}, "temperature must be finite"),
    ({"texts": "Hi.", "top_p": 0}, r"top_p must be in \(0.0, 1.0\]"),
    ({"texts": "Hi.", "min_p": -0.1}, "min_p must be in"),
    ({"texts": "Hi.", "repetition_penalty": 0}, "repetition_penalty must be in"),
    ({"texts": "Hi.", "cfg_weight": -1}, "cfg_weight must be in"),
    ({"texts": "Hi.", "exaggeration": "high"}, "exaggeration must be a number"),
    ({"texts": "Hi.", "max_new_tokens": 0}, "max_new_tokens must be in"),
    ({"texts": "Hi.", "max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
    ({"texts": "Hi.", "seed": -3}, "seed must be None or an integer"),
    ({"texts": "Hi.", "seed": 2 ** 64}, r"seed must be None or an integer in \[0, 2\*\*64 - 1\]"),
    ({"texts": ["a.", "b."], "cfg_weight": [0.5]}, "cfg_weight: got 1 values for 2 texts"),
    ({"texts": ["a.", "b."], "temperature": [0.5, 9]}, r"temperature \(text 1\)"),
    ({"texts": "Hi.", "top_k": 5}, r"unknown parameter\(s\) \['top_k'\]"),
    ({"texts": "Hi.", "voice": 42}, "voice must be None, a Voice"),
    ({"texts": "Hi.", "voice": "missing.pt"}, "voice file not found"),
])
def test_bad_input_is_rejected_before_vllm(tts, kwargs, message):
    before = tts.t3_engine.requests_submitted
    with pytest.raises(ValueError, match=message):
        tts.generate_speech_tokens(**kwargs)
    assert tts.t3_engine.requests_submitted == before, "nothing may reach vLLM"


def test_request_over_engine_length_is_rejected(tts):
    with pytest.raises(ValueError, match="exceeds the engine's max_model_len"):
        tts.generate_speech_tokens("Hello there.", max_new_tokens=4000)


def test_per_text_parameters_and_order(tts):
    texts = ["First.", "A somewhat longer second sentence.", "Third!"]
    tokens = tts.generate_speech_tokens(texts, temperature=0, max_new_tokens=[5, 9, 7], cfg_weight=[0.0, 0.5, 1.0])
    assert [len(t) for t in tokens] == [5, 9, 7]
    alone = tts.generate_speech_tokens(texts[1], temperature=0, max_new_tokens=9, cfg_weight=0.5)
    assert alone[0] == tokens[1]
    assert all(0 <= t < 6561 for seq in tokens for t in seq)


def test_seeded_sampling_is_reproducible_and_seed_dependent(tts):
    texts = ["Seeds make sampling repeatable."] * 2
    first = tts.generate_speech_tokens(texts, seed=[1, 2], max_new_tokens=24)
    second = tts.generate_speech_tokens(texts, seed=[1, 2], max_new_tokens=24)
    assert first == second
    assert first[0] != first[1]


def test_largest_seed_vllm_accepts(tts):
    """2**64 - 1 is the largest seed vLLM takes (msgpack's uint64; torch.Generator.manual_seed)."""
    first = tts.generate_speech_tokens("Big seeds.", seed=2 ** 64 - 1, max_new_tokens=6)
    assert first == tts.generate_speech_tokens("Big seeds.", seed=2 ** 64 - 1, max_new_tokens=6)
    assert len(first[0]) == 6


def test_seeded_batch_needing_several_prefill_steps(tts):
    """More prompt rows than vLLM prefills in one step (4096 on CPU), every request seeded.

    vLLM 0.32 rewinds a seeded generator when a prompt is prefilled in parts, which kills the
    engine on CPU; our CPU default prefills whole prompts. Seeds still decide the tokens.
    """
    texts = [f"Request {i}: the quick brown fox jumps over the lazy dog while the sleepy cat watches from "
             f"the windowsill, and the rain keeps falling on the old tin roof of the barn all afternoon."
             for i in range(32)]
    prompt_rows = sum(len(tts.text_token_ids(t)) + 36 for t in texts)  # + 34 conditioning rows + 2 BOS
    assert prompt_rows > 4096
    tokens = tts.generate_speech_tokens(texts, seed=list(range(100, 132)), max_new_tokens=4)
    assert all(len(t) == 4 for t in tokens)
    alone = tts.generate_speech_tokens(texts[7], seed=107, max_new_tokens=4)
    assert alone[0] == tokens[7]


def test_seed_with_explicit_chunked_prefill_on_cpu_is_refused(tts_constrained):
    with pytest.raises(ValueError, match="chunked prefill"):
        tts_constrained.generate_speech_tokens("Hello.", seed=1, max_new_tokens=4)
    # Greedy requests draw nothing, so they stay allowed.
    assert len(tts_constrained.generate_speech_tokens("Hello.", seed=1, temperature=0, max_new_tokens=4)[0]) == 4


def test_clean_up_follows_the_original():
    cfg = T3Config()
    assert clean_speech_tokens([5, 6, 6562], cfg) == [5, 6]
    assert clean_speech_tokens([5, 6561, 7, 8, 6562, 9], cfg) == [7, 8]
    assert clean_speech_tokens([1, 7000, 2, 6561, 3], cfg) == [3]
    assert clean_speech_tokens([1, 7000, 2], cfg) == [1, 2]
    assert clean_speech_tokens([6562], cfg) == []


def test_stop_token_ends_the_request_and_is_removed(tts, tmp_path):
    """Random weights never choose 6562 by themselves, so the recorder forces it at step 6."""
    from tests.t3.llama.driver import run_recorded

    forced = [11, 12, 13, 14, 15, 16, tts.config.t3.stop_speech_token, 17, 18]
    request = tts.prepare_t3_requests("Stop here.", temperature=0, max_new_tokens=30)[0]
    out = run_recorded(tts.t3_engine, [request], tmp_path, ["stop"], forced=[forced])["stop"]
    assert list(out.token_ids) == forced[:7]
    assert out.finish_reason == "stop"
    assert clean_speech_tokens(out.token_ids, tts.config.t3) == forced[:6]


def test_only_the_stop_speech_token_stops(tts, tmp_path):
    """Speech token 2 is Llama's default end-of-sequence id; a config without T3's own stop id made
    vLLM end requests on it. Forced twice here, the request must run to its token budget."""
    from tests.t3.llama.driver import run_recorded

    forced = [11, 2, 13, 2, 15, 16, 17, 18]
    request = tts.prepare_t3_requests("Keep going.", temperature=0, max_new_tokens=len(forced))[0]
    out = run_recorded(tts.t3_engine, [request], tmp_path, ["two"], forced=[forced])["two"]
    assert list(out.token_ids) == forced
    assert out.finish_reason == "length"


def test_vllm_sees_only_the_t3_weights(fixture_model_dir):
    from vllm_chatterbox.t3.llama.engine_spec import vllm_model_dir

    directory = vllm_model_dir(fixture_model_dir / "t3_cfg.safetensors", tts_config(fixture_model_dir))
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "t3_cfg.safetensors"]
    assert (directory / "t3_cfg.safetensors").resolve() == (fixture_model_dir / "t3_cfg.safetensors").resolve()


def tts_config(model_dir):
    from vllm_chatterbox.config import ChatterboxConfig

    return ChatterboxConfig.for_model_dir(model_dir).t3
