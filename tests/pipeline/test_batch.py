"""End to end: text -> T3 on vLLM -> batched S3Gen, overlapped."""

import numpy as np
import pytest

TEXTS = ["A short one.", "This sentence is a good deal longer than the first one was.", "Middle length text."]
SEEDS = [1, 2, 3]


def test_generate_equals_tokens_then_audio(tts_tiny):
    """Same seeds: the pipelined path gives the audio of the two public steps run separately
    (unmarked: the watermark is tested in test_watermark.py)."""
    params = dict(seed=SEEDS, max_new_tokens=[12, 30, 20], exaggeration=[0.5, 0.8, 0.3])
    wavs = tts_tiny.generate(TEXTS, n_timesteps=3, watermark=False, **params)
    tokens = tts_tiny.generate_speech_tokens(TEXTS, **params)
    audio = tts_tiny.speech_tokens_to_audio(tokens, n_timesteps=3, seed=SEEDS)
    assert [len(w) for w in wavs] == [960 * len(t) for t in tokens]
    for ours, separate in zip(wavs, audio):
        assert ours.dtype == np.float32 and np.isfinite(ours).all()
        np.testing.assert_allclose(ours, separate, atol=1e-5, rtol=0)


def test_given_noise_makes_audio_deterministic(tts_tiny):
    tokens = tts_tiny.generate_speech_tokens(TEXTS[:2], seed=[4, 5], max_new_tokens=10)
    prompt = tts_tiny.builtin_voice.prompt_token.shape[1]
    rng = np.random.default_rng(0)
    noise = [rng.standard_normal((80, 2 * (prompt + len(t))), dtype=np.float32) for t in tokens]
    first = tts_tiny.speech_tokens_to_audio(tokens, noise=noise, seed=[9, 9], n_timesteps=2)
    second = tts_tiny.speech_tokens_to_audio(tokens, noise=noise, seed=[9, 9], n_timesteps=2)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_audio_starts_before_t3_finishes(tts_tiny):
    """No 'all T3 first' barrier: the short text is vocoded while the long one still decodes."""
    events = []
    for index, _wav in tts_tiny._synthesize(["Quick.", "Slow and long."], None, 2,
                                            {"max_new_tokens": [4, 900], "seed": [1, 2]}):
        events.append((index, tts_tiny.t3_engine.has_unfinished()))
    assert events[0] == (0, True)
    assert [i for i, _ in events] == [0, 1]


@pytest.mark.parametrize("kwargs,message", [
    ({"n_timesteps": 0}, r"n_timesteps must be an integer in \[1, 100\]"),
    ({"n_timesteps": [2, 3]}, "n_timesteps: got 2 values for 1 texts"),
    ({"temperature": -1}, "temperature must be in"),
])
def test_generate_rejects_bad_parameters(tts_tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tts_tiny.generate("Hello.", **kwargs)


def test_speech_tokens_to_audio_rejects_bad_input(tts_tiny):
    with pytest.raises(ValueError, match="non-empty list"):
        tts_tiny.speech_tokens_to_audio([])
    with pytest.raises(ValueError, match="6561|token"):
        tts_tiny.speech_tokens_to_audio([[1, 2, 7000]])
    with pytest.raises(ValueError, match="noise: got 1 arrays for 2"):
        tts_tiny.speech_tokens_to_audio([[1, 2], [3]], noise=[np.zeros((80, 4), np.float32)])
