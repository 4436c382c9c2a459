"""End to end, text to 24 kHz audio: the original's one-sentence-at-a-time loop vs ``generate``.

Not a test. Uses a random-weight model at the released size (``make_test_model(size="full")``,
fp32), created once under ``--model-dir`` (shared with ``bench/t3_decode.py``).

* baseline, as the original runs a job: for each sentence in turn, T3 with
  ``reference.t3.ReferenceT3.generate`` (the original's loop: HF ``LlamaModel``, batch of
  two rows cond/uncond, KV cache, CFG -> repetition penalty -> temperature -> min_p -> top_p ->
  ``torch.multinomial``), then ``S3Gen.inference`` on that one clip.
* ours: one ``ChatterboxTTS.generate`` call on all sentences: T3 batched on vLLM while finished
  sentences are vocoded by S3Gen in this process; once per ``--dtype`` (``float32``:
  the exact default; ``bfloat16``: the fast mode, ``dtype`` and ``s3gen_dtype`` both bf16), each
  on a fresh engine.

Both use the default sampling parameters, the built-in voice and ``--n-timesteps`` CFM steps.
Random weights rarely emit the stop token, so every sentence gets its own ``max_new_tokens``,
``--max-new-tokens-scale`` speech tokens per text token (capped), and both sides produce that
many tokens. Timed: text in to waveforms out (prompt building included); model loading, engine
start and a short warm-up excluded. The baseline runs and is freed before vLLM starts, so the
two T3 copies never coexist.

Threads: the baseline uses ``--threads`` for everything. Ours gives vLLM ``--t3-threads``
OpenMP threads bound to the first cores and S3Gen (this process) ``--threads`` threads.

    python bench/e2e.py                                    # from the repository root
    python bench/e2e.py --sentences 8 --max-new-tokens-scale 1.0
    python bench/e2e.py --sentences 4 --dtype float32 bfloat16
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The baseline lives at the repository root (reference/t3.py); make the root importable
# when the script is run as ``python bench/e2e.py``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import EXAGGERATION, SAMPLING, WARMUP_TEXT, WARMUP_TOKENS, reference_speech_tokens  # noqa: E402
from vllm_chatterbox.config import ChatterboxConfig  # noqa: E402
from vllm_chatterbox.t3.engine import DEFAULT_BLOCK_SIZE, cache_root  # noqa: E402
from vllm_chatterbox.t3.llama.tokens import clean_speech_tokens  # noqa: E402
from vllm_chatterbox.demo_model import make_test_model  # noqa: E402
from vllm_chatterbox.text import EnglishTokenizer, text_to_token_ids  # noqa: E402
from vllm_chatterbox.voice.voice import Voice  # noqa: E402

logger = logging.getLogger("bench.e2e")

SAMPLE_RATE = 24000
# A job of English prose, 2 to ~45 words a sentence.
SENTENCES = [
    "The lighthouse keeper climbed the stairs for the last time that winter.",
    "Rain again.",
    "Nobody in the village could remember when the old bridge had been built, but everyone agreed "
    "that it would outlast the new one.",
    "She folded the letter twice and slipped it under the door.",
    "Why now?",
    "The train was late, the platform was crowded, and the coffee stand had run out of cups an hour ago.",
    "He counted the coins on the table: three silver, two copper, one he did not recognise.",
    "Outside, the wind pushed the snow into long soft ridges against the fence.",
    "I told you it would work.",
    "By the time the orchestra reached the final movement, half of the audience had forgotten "
    "about the storm outside and the other half had forgotten about the orchestra.",
    "The map was wrong.",
    "They walked along the river until the path ran out and the reeds grew taller than their heads.",
    "Please leave your shoes by the door and your worries at the gate.",
    "Every morning the baker opened the shutters at six, swept the step, and wrote the day's bread "
    "on a small chalkboard that leaned against the window.",
    "What would you have done?",
    "The cat watched the goldfish with the patience of a philosopher.",
    "Somewhere below, a door slammed and footsteps hurried away down the corridor.",
    "It was, she decided, the best and the worst idea anyone had ever had.",
    "Thank you.",
    "The expedition carried enough food for six weeks, enough fuel for four, and enough optimism "
    "for several years, which turned out to be the most useful of the three.",
    "Lanterns swung from the masts as the boats came home one by one.",
    "He had never seen the sea before that summer.",
    "The committee met on Tuesday, argued on Wednesday, and agreed on nothing by Friday.",
    "Listen.",
    "A single candle burned in the window of the empty house at the end of the lane.",
    "The children built a fort out of blankets and declared it an independent kingdom with its own "
    "laws, its own flag, and a strict policy against vegetables.",
    "Snow fell all night without a sound.",
    "Her grandmother's recipe called for a pinch of salt, a handful of patience, and exactly one "
    "very old wooden spoon.",
    "The clock struck midnight.",
    "We will need a bigger boat, a better plan, and a great deal more luck than we had last time.",
    "Far away, thunder rolled over the hills like furniture being moved upstairs.",
    "And that was the end of that.",
]


@dataclass(frozen=True)
class Result:
    name: str
    seconds: float
    audio_seconds: float
    speech_tokens: int

    @property
    def audio_per_second(self) -> float:
        return self.audio_seconds / self.seconds


def configure_threads(threads: int, t3_threads: int) -> None:
    available = sorted(os.sched_getaffinity(0))
    if max(threads, t3_threads) > len(available):
        raise ValueError(f"--threads/--t3-threads exceed the {len(available)} CPUs available")
    torch.set_num_threads(threads)
    # vLLM's CPU worker sets its OpenMP threads from this, pinned to these cores.
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, available[:t3_threads]))


def run_baseline(model_dir: Path, cfg: ChatterboxConfig, text_ids: list[list[int]], budgets: list[int],
                 warmup_ids: list[int], n_timesteps: int) -> tuple[Result, str]:
    """The baseline's result and a line naming the settings it ran with."""
    import transformers
    from reference.t3 import ReferenceT3
    from vllm_chatterbox.s3gen.model import S3Gen

    voice = Voice.load(model_dir / "conds.pt")
    reference = ReferenceT3(model_dir / "t3_cfg.safetensors", cfg.t3)
    # The backbone now lives in reference.tfmr; drop the loaded copy of its weights (~2 GB).
    reference.w = {k: v for k, v in reference.w.items() if not k.startswith("tfmr.")}
    s3gen = S3Gen.from_file(model_dir / "s3gen.safetensors", cfg)
    settings = (f"baseline: T3 = transformers {transformers.__version__} LlamaModel, attn_implementation "
                f"{reference.tfmr.config._attn_implementation}, DynamicCache, {next(reference.tfmr.parameters()).dtype}, "
                f"batch of 2 rows (cond, uncond); S3Gen = one clip per call, {s3gen.compute_dtype}, SDPA attention; "
                f"torch {torch.__version__} with {torch.get_num_threads()} thread(s); one sentence at a time")

    def speak(ids: list[int], max_new_tokens: int, seed: int) -> tuple[int, np.ndarray]:
        generator = torch.Generator().manual_seed(seed)
        tokens = clean_speech_tokens(reference_speech_tokens(reference, voice, ids, max_new_tokens, generator), cfg.t3)
        if not tokens:
            return 0, np.zeros(0, np.float32)
        wav = s3gen.inference([tokens], [voice], n_timesteps=n_timesteps,
                              generators=[torch.Generator().manual_seed(seed)])[0]
        return len(tokens), wav

    speak(warmup_ids, WARMUP_TOKENS, 0)
    tokens, samples, start = 0, 0, time.perf_counter()
    for i, (ids, budget) in enumerate(zip(text_ids, budgets)):
        n, wav = speak(ids, budget, seed=i)
        tokens, samples = tokens + n, samples + len(wav)
        logger.info("baseline sentence %d/%d: %d tokens, %.1f s so far", i + 1, len(text_ids), n,
                    time.perf_counter() - start)
    seconds = time.perf_counter() - start
    return Result("baseline (one at a time)", seconds, samples / SAMPLE_RATE, tokens), settings


def kv_cache_bytes(cfg: ChatterboxConfig, prompt_lens: list[int], budgets: list[int], dtype: str) -> int:
    """KV blocks for every request at its full length (both CFG branches), plus a quarter."""
    t3 = cfg.t3
    element_bytes = 4 if dtype == "float32" else 2
    per_token = 2 * 2 * t3.num_kv_heads * t3.head_dim * t3.num_layers * element_bytes  # K and V, two branches
    blocks = sum(math.ceil((p + b) / DEFAULT_BLOCK_SIZE) + 1 for p, b in zip(prompt_lens, budgets))
    return int(blocks * DEFAULT_BLOCK_SIZE * per_token * 1.25)


def run_ours(model_dir: Path, texts: list[str], budgets: list[int], n_timesteps: int, kv_bytes: int,
             max_model_len: int, dtype: str) -> Result:
    """``generate`` with T3 and S3Gen both in ``dtype`` (bfloat16: the fast mode)."""
    from vllm_chatterbox.tts import ChatterboxTTS

    logger.info("starting vLLM (%s): max_model_len %d, KV cache %.2f GiB", dtype, max_model_len, kv_bytes / 2**30)
    tts = ChatterboxTTS.from_dir(model_dir, max_model_len=max_model_len, kv_cache_memory_bytes=kv_bytes,
                                 max_num_seqs=len(texts), dtype=dtype, s3gen_dtype=dtype)
    try:
        tts.generate(WARMUP_TEXT, max_new_tokens=WARMUP_TOKENS, n_timesteps=n_timesteps, seed=0)
        start = time.perf_counter()
        wavs = tts.generate(texts, exaggeration=EXAGGERATION, max_new_tokens=budgets, n_timesteps=n_timesteps,
                            seed=list(range(len(texts))), **SAMPLING)
        seconds = time.perf_counter() - start
    finally:
        tts.t3_engine.shutdown()
    samples = sum(len(w) for w in wavs)
    # S3Gen turns each speech token into 960 samples (25 tokens/s at 24 kHz).
    return Result(f"ours {dtype} (vLLM + pipelined S3Gen)", seconds, samples / SAMPLE_RATE, samples // 960)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--sentences", type=int, default=len(SENTENCES), help=f"1..{len(SENTENCES)}")
    parser.add_argument("--max-new-tokens-scale", type=float, default=2.5,
                        help="speech tokens per text token of each sentence")
    parser.add_argument("--max-new-tokens-cap", type=int, default=300)
    parser.add_argument("--n-timesteps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="compute threads of the baseline and of our S3Gen")
    parser.add_argument("--t3-threads", type=int, default=1, help="vLLM's OpenMP threads (bound)")
    parser.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16"], default=["float32"],
                        help="our runs, one each: T3 and S3Gen in this dtype (bfloat16 = the fast mode)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not 1 <= args.sentences <= len(SENTENCES) or args.max_new_tokens_scale <= 0 or args.max_new_tokens_cap < 1:
        parser.error("--sentences out of range, or --max-new-tokens-scale / --max-new-tokens-cap not positive")

    configure_threads(args.threads, args.t3_threads)
    model_dir = args.model_dir.expanduser()
    if not (model_dir / "t3_cfg.safetensors").is_file():
        make_test_model(model_dir, size="full", seed=0)
    cfg = ChatterboxConfig()
    tokenizer = EnglishTokenizer.from_file(model_dir / "tokenizer.json")
    texts = SENTENCES[:args.sentences]
    text_ids = [text_to_token_ids(t, tokenizer, max_text_tokens=cfg.t3.max_text_len) for t in texts]
    budgets = [min(args.max_new_tokens_cap, max(1, round(args.max_new_tokens_scale * (len(ids) - 2))))
               for ids in text_ids]
    prompt_lens = [cfg.t3.cond_len + len(ids) + 2 for ids in text_ids]  # + the two start-of-speech rows
    max_model_len = math.ceil(max(p + b for p, b in zip(prompt_lens, budgets)) / DEFAULT_BLOCK_SIZE) * DEFAULT_BLOCK_SIZE

    results, settings = [], None
    if not args.skip_baseline:
        warmup_ids = text_to_token_ids(WARMUP_TEXT, tokenizer, max_text_tokens=cfg.t3.max_text_len)
        baseline, settings = run_baseline(model_dir, cfg, text_ids, budgets, warmup_ids, args.n_timesteps)
        results.append(baseline)
        gc.collect()  # the baseline's models went out of scope with run_baseline; free them before vLLM starts
    for dtype in args.dtype:
        results.append(run_ours(model_dir, texts, budgets, args.n_timesteps,
                                kv_cache_bytes(cfg, prompt_lens, budgets, dtype), max_model_len, dtype))

    print(f"End to end, full-size random weights, CPU: {len(texts)} sentences, speech tokens per sentence "
          f"{min(budgets)}..{max(budgets)} (total {sum(budgets)}), {args.n_timesteps} CFM steps, "
          f"threads {args.threads} (vLLM {args.t3_threads})")
    if settings:
        print(settings)
    print(f"{'mode':<36}{'wall s':>9}{'audio s':>9}{'tokens':>8}{'audio s / s':>13}{'vs baseline':>13}")
    for r in results:
        ratio = f"{r.audio_per_second / results[0].audio_per_second:.2f}x" if settings else "-"
        print(f"{r.name:<36}{r.seconds:>9.1f}{r.audio_seconds:>9.1f}{r.speech_tokens:>8}{r.audio_per_second:>13.3f}"
              f"{ratio:>13}")


if __name__ == "__main__":
    main()
