"""Latency of one request (and of several at once), both T3 families: the original's loop vs ours.

Not a test. Random-weight models at the released sizes (``make_test_model(size="full")``, fp32),
built once under ``--model-dir`` (original) and ``--turbo-model-dir`` (Turbo).

* baseline, the original's algorithm as the original runs it, one text at a time:
  original family: ``reference.t3.ReferenceT3.generate`` (transformers ``LlamaModel``, sdpa,
  ``DynamicCache``, a batch of two rows cond/uncond, CFG -> repetition penalty -> temperature ->
  min_p -> top_p -> ``multinomial``); Turbo: ``reference.turbo.ReferenceTurboT3.generate``
  (transformers ``GPT2Model``, ``DynamicCache``, transformers' processors temperature -> top-k ->
  top-p -> repetition penalty -> ``multinomial``); then S3Gen on the one clip (10 CFM steps;
  Turbo: the 2-step meanflow), as ``generate`` does, without the watermark.
* ours: ``ChatterboxTTS.from_dir(..., t3_threads=T)``: T3 on vLLM in its engine process, S3Gen
  in this one; ``generate(..., watermark=False)``, since the baseline does not mark either (the
  mark costs about 0.6-1.2 s on a 4 s clip here).

Both sides use the public default sampling parameters, the built-in voice and seeded draws.
Random weights rarely stop, so every request gets ``--tokens`` speech tokens (the tables print
what each side produced). Rows, for each ``--threads`` T (both sides T threads: the baseline and
our S3Gen through ``torch.set_num_threads``, our engine through ``t3_threads``):

* T3, one request: tokens / wall seconds, prompt building and prefill included;
* generate, one request: text in to waveform out;
* S3Gen inside our ``generate`` vs S3Gen alone on the same tokens with the engine idle (is the
  engine quiet while S3Gen works?);
* ``--concurrency`` N texts at once: our T3 (N requests in flight) and ``generate`` on all N,
  against the baseline running the same N texts one after another.

One-request rows alternate baseline / ours ``--reps`` times (the median is printed, with the
spread); the machine's noise hits both sides alike. ``--split A,B`` adds our engine with
``t3_threads=A, s3gen_threads=B`` (a core split) as another row group.

    python bench/latency.py                                  # from the repository root
    python bench/latency.py --family turbo --threads 1 2 --reps 3
    python bench/latency.py --family turbo original --split 1,1
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

# The baselines live at the repository root (reference/); make the root importable when the
# script is run as ``python bench/latency.py``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import torch  # noqa: E402

from bench.common import EXAGGERATION, SAMPLING  # noqa: E402
from vllm_chatterbox.t3.engine import cache_root  # noqa: E402
from vllm_chatterbox.demo_model import make_test_model  # noqa: E402

logger = logging.getLogger("bench.latency")

ONE_TEXT = "The quick brown fox jumps over the lazy dog near the riverbank, and nobody saw it happen."
TEXTS = [
    "Hello there, and welcome back.",
    "Please remember to bring your umbrella, because the forecast says it will rain all afternoon.",
    "Turn left at the second traffic light.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Good morning! How did you sleep last night?",
    "The meeting has been moved to Thursday at three o'clock.",
    "Could you read that number back to me, slowly, one digit at a time?",
    "Thanks for listening, and have a wonderful evening.",
]
MIN_FREE_GIB = 8
SAMPLE_RATE = 24000


@dataclass
class Family:
    name: str  # "original" or "turbo"
    model_dir: Path
    n_timesteps: int

    @property
    def turbo(self) -> bool:
        return self.name == "turbo"


@dataclass
class Samples:
    """Repeated measurements of one quantity."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, unit: str, digits: int = 2) -> str:
        if not self.values:
            return "-"
        return f"{self.median:.{digits}f}{unit} [{min(self.values):.{digits}f}..{max(self.values):.{digits}f}]"


@dataclass
class Side:
    """One side's measurements at one thread setting."""

    label: str
    settings: str = ""
    t3_tok_s: Samples = field(default_factory=Samples)
    t3_tokens: list[int] = field(default_factory=list)
    generate_s: Samples = field(default_factory=Samples)
    s3gen_inside_s: Samples = field(default_factory=Samples)
    s3gen_alone_s: Samples = field(default_factory=Samples)
    many_t3_tok_s: float | None = None
    many_generate_s: float | None = None
    many_tokens: int = 0


# --- the baseline -------------------------------------------------------------------------------

class Baseline:
    """The original's loop for one family, with its S3Gen call (this process's torch threads)."""

    def __init__(self, family: Family, tts, device: torch.device):
        import transformers

        self.family = family
        self.device = device
        self.tts = tts  # for the tokenizer (tested equal to the original's) and the voice
        self.voice = tts.builtin_voice
        # T3's view of the voice, on the baseline's device.
        self.t3_voice = SimpleNamespace(speaker_emb=self.voice.speaker_emb.to(device),
                                        cond_prompt_speech_tokens=self.voice.cond_prompt_speech_tokens.to(device))
        self.s3gen_inference = tts.s3gen.inference  # S3Gen shared with ours, called directly
        if family.turbo:
            from reference.turbo import ReferenceTurboT3

            self.reference = ReferenceTurboT3(family.model_dir / "t3_turbo_v1.safetensors", tts.config.turbo_t3)
            self.reference.to(device)
            model = "GPT2Model"
        else:
            from reference.t3 import ReferenceT3

            self.reference = ReferenceT3(family.model_dir / "t3_cfg.safetensors", tts.config.t3)
            # The backbone lives in reference.tfmr now; drop the loaded copy of its weights (~2 GB).
            self.reference.w = {k: v.to(device) for k, v in self.reference.w.items() if not k.startswith("tfmr.")}
            self.reference.tfmr.to(device)
            model = "LlamaModel (a batch of 2 rows: cond, uncond)"
        tfmr = self.reference.tfmr
        self.settings = (f"baseline: transformers {transformers.__version__} {model} on {device}, attn_implementation "
                         f"{tfmr.config._attn_implementation}, DynamicCache, {next(tfmr.parameters()).dtype}; S3Gen one "
                         f"clip per call, {family.n_timesteps} steps; torch {torch.__version__}, {{threads}} thread(s)")

    def speech_tokens(self, text: str, max_new_tokens: int, seed: int) -> list[int]:
        """What the original's T3 returns for one text (prompt building included)."""
        generator = torch.Generator(self.device).manual_seed(seed)
        ids = self.tts.text_token_ids(text)
        voice = self.t3_voice
        if self.family.turbo:
            prefill = self.reference.prefill_embeds(voice.speaker_emb, voice.cond_prompt_speech_tokens, ids)
            return self.reference.generate(prefill, max_new_tokens - 1, generator=generator)  # the first + the loop's
        from bench.common import reference_speech_tokens

        return reference_speech_tokens(self.reference, voice, ids, max_new_tokens, generator)

    def s3gen_tokens(self, tokens: list[int]) -> list[int]:
        """The original's clean-up before S3Gen."""
        if self.family.turbo:
            from vllm_chatterbox.t3.gpt2.tokens import tokens_for_s3gen

            return tokens_for_s3gen(tokens, self.tts.config.turbo_t3)
        from vllm_chatterbox.t3.llama.tokens import clean_speech_tokens

        return clean_speech_tokens(tokens, self.tts.config.t3)

    def generate(self, text: str, max_new_tokens: int, seed: int):
        tokens = self.s3gen_tokens(self.speech_tokens(text, max_new_tokens, seed))
        return self.s3gen_inference([tokens], [self.voice], n_timesteps=self.family.n_timesteps, seeds=[seed])[0]


# --- ours ---------------------------------------------------------------------------------------

class TimedS3Gen:
    """Wraps ``S3Gen.inference`` of our pipeline to time it and keep what it was given."""

    def __init__(self, s3gen):
        self.s3gen = s3gen
        self.inner = s3gen.inference
        self.calls: list[tuple[float, tuple, dict]] = []
        s3gen.inference = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        result = self.inner(*args, **kwargs)
        self.calls.append((time.perf_counter() - start, args, kwargs))
        return result

    def alone(self, args: tuple, kwargs: dict) -> float:
        start = time.perf_counter()
        self.inner(*args, **kwargs)
        return time.perf_counter() - start


def load_ours(family: Family, t3_threads: int, s3gen_threads: int, concurrency: int):
    from vllm_chatterbox.tts import ChatterboxTTS

    return ChatterboxTTS.from_dir(family.model_dir, t3_threads=t3_threads, s3gen_threads=s3gen_threads,
                                  max_num_seqs=max(8, concurrency))  # the default 2 GiB KV cache: CFG Llama needs 1.4


def our_settings(tts, s3gen_threads: int) -> str:
    import vllm
    from vllm.platforms import current_platform

    config = tts.t3_engine.vllm_config
    return (f"ours: vLLM {vllm.__version__}, executor {config.parallel_config.distributed_executor_backend}, "
            f"{tts.t3_engine.dtype}, attention {config.attention_config.backend or 'auto'} "
            f"({current_platform.device_name}), "
            f"t3_threads {tts.t3_engine.threads}, S3Gen threads {s3gen_threads}, cpu_sharing {tts.cpu_sharing}, "
            f"max_num_seqs {config.scheduler_config.max_num_seqs}, generate without the watermark (as the baseline)")


def our_t3(tts, texts: list[str], max_new_tokens: int, seed: int) -> int:
    requests = tts.prepare_t3_requests(texts, max_new_tokens=max_new_tokens, seed=[seed + i for i in range(len(texts))],
                                       **t3_sampling(tts))
    return sum(len(r.token_ids) for r in tts.t3_engine.generate(requests))


def t3_sampling(tts) -> dict:
    return {} if tts.files.is_turbo else dict(exaggeration=EXAGGERATION, **SAMPLING)


# --- one thread setting -------------------------------------------------------------------------

def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def measure(family: Family, args, t3_threads: int, s3gen_threads: int, with_baseline: bool) -> tuple[Side, Side | None]:
    """Our side (and the baseline at ``s3gen_threads`` threads) for one configuration."""
    torch.set_num_threads(s3gen_threads)
    tts = load_ours(family, t3_threads, s3gen_threads, args.concurrency)
    ours = Side(f"ours t3 {t3_threads} + s3gen {s3gen_threads}")
    baseline = Side(f"baseline {s3gen_threads} thread(s)") if with_baseline else None
    try:
        reference = Baseline(family, tts, torch.device(args.device)) if with_baseline else None
        ours.settings = our_settings(tts, s3gen_threads)
        if reference:
            baseline.settings = reference.settings.format(threads=torch.get_num_threads())
        timer = TimedS3Gen(tts.s3gen)
        sampling = t3_sampling(tts)
        # Warm-up: both T3s, S3Gen, the engine's first batch.
        tts.generate("Warm up.", max_new_tokens=8, seed=0, watermark=False, **sampling)
        if reference:
            reference.generate("Warm up.", 8, seed=0)
        for rep in range(args.reps):
            seed = 100 + rep
            if reference:
                seconds, tokens = timed(lambda: reference.speech_tokens(ONE_TEXT, args.tokens, seed))
                baseline.t3_tok_s.add(len(tokens) / seconds)
                baseline.t3_tokens.append(len(tokens))
            seconds, count = timed(lambda: our_t3(tts, [ONE_TEXT], args.tokens, seed))
            ours.t3_tok_s.add(count / seconds)
            ours.t3_tokens.append(count)
            if reference:
                baseline.generate_s.add(timed(lambda: reference.generate(ONE_TEXT, args.tokens, seed))[0])
            timer.calls.clear()
            ours.generate_s.add(timed(lambda: tts.generate(ONE_TEXT, max_new_tokens=args.tokens, seed=seed,
                                                           watermark=False, **sampling))[0])
            inside = sum(call[0] for call in timer.calls)
            ours.s3gen_inside_s.add(inside)
            ours.s3gen_alone_s.add(sum(timer.alone(call[1], call[2]) for call in timer.calls))
            logger.info("%s rep %d: ours T3 %.2f tok/s, generate %.1f s (S3Gen %.1f s inside, %.1f s alone)%s",
                        family.name, rep, ours.t3_tok_s.values[-1], ours.generate_s.values[-1], inside,
                        ours.s3gen_alone_s.values[-1],
                        f"; baseline T3 {baseline.t3_tok_s.values[-1]:.2f} tok/s, generate "
                        f"{baseline.generate_s.values[-1]:.1f} s" if reference else "")
        if args.concurrency > 1:
            texts = [TEXTS[i % len(TEXTS)] for i in range(args.concurrency)]
            seconds, count = timed(lambda: our_t3(tts, texts, args.tokens, 0))
            ours.many_t3_tok_s, ours.many_tokens = count / seconds, count
            ours.many_generate_s = timed(lambda: tts.generate(texts, max_new_tokens=args.tokens,
                                                              seed=list(range(len(texts))), watermark=False,
                                                              **sampling))[0]
            if reference:
                seconds, counts = timed(lambda: [len(reference.speech_tokens(t, args.tokens, i))
                                                 for i, t in enumerate(texts)])
                baseline.many_t3_tok_s, baseline.many_tokens = sum(counts) / seconds, sum(counts)
                baseline.many_generate_s = timed(lambda: [reference.generate(t, args.tokens, i)
                                                          for i, t in enumerate(texts)])[0]
    finally:
        tts.t3_engine.shutdown()
        del tts
        gc.collect()
    return ours, baseline


# --- report -------------------------------------------------------------------------------------

def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "-"


def report(family: Family, args, groups: list[tuple[Side, Side | None]]) -> None:
    print(f"\n== {family.name} family ({family.model_dir}), fp32, {args.device} ({len(os.sched_getaffinity(0))} CPU cores), "
          f"{args.tokens} speech tokens per text, {family.n_timesteps} S3Gen steps, {args.reps} rep(s): "
          f"median [min..max]")
    for ours, baseline in groups:
        for side in (baseline, ours):
            if side:
                print(side.settings)
    print(f"{'row':<44}{'T3 tok/s (1 request)':>30}{'generate s (1 request)':>30}"
          f"{'S3Gen in generate / alone':>28}{f'T3 tok/s ({args.concurrency})':>16}{f'generate s ({args.concurrency})':>18}")
    for ours, baseline in groups:
        for side in (baseline, ours):
            if not side:
                continue
            s3gen = (f"{side.s3gen_inside_s.median:.2f} / {side.s3gen_alone_s.median:.2f} s"
                     if side.s3gen_inside_s.values else "-")
            many = f"{side.many_t3_tok_s:.2f}" if side.many_t3_tok_s else "-"
            many_s = f"{side.many_generate_s:.1f}" if side.many_generate_s else "-"
            print(f"{side.label:<44}{side.t3_tok_s.spread(''):>30}{side.generate_s.spread(' s', 1):>30}{s3gen:>28}"
                  f"{many:>16}{many_s:>18}")
    print("ratios (ours vs the baseline at the same threads; targets from issue 19):")
    for ours, baseline in groups:
        if not baseline:
            continue
        inside, alone = ours.s3gen_inside_s.median, ours.s3gen_alone_s.median
        print(f"  {ours.label} vs {baseline.label}: T3 one request {ratio(ours.t3_tok_s.median, baseline.t3_tok_s.median)}"
              f" (target >= 1.20x); generate one request wall {ours.generate_s.median / baseline.generate_s.median:.2f}"
              f" of the baseline's (Turbo target <= 0.80); S3Gen inside generate {inside / alone:.2f} of alone "
              f"(target <= 1.10); {args.concurrency} texts: T3 {ratio(ours.many_t3_tok_s, baseline.many_t3_tok_s)}, "
              f"generate wall {ratio(ours.many_generate_s, baseline.many_generate_s)} of the baseline's")
    bases = [b for _, b in groups if b]
    if len(bases) > 1 or len(groups) > 1:
        best_base = max(bases, key=lambda s: s.t3_tok_s.median)
        best_ours = max((o for o, _ in groups), key=lambda s: s.t3_tok_s.median)
        fastest_base = min(bases, key=lambda s: s.generate_s.median)
        fastest_ours = min((o for o, _ in groups), key=lambda s: s.generate_s.median)
        print(f"  best vs best: T3 one request {best_ours.label} / {best_base.label} "
              f"{ratio(best_ours.t3_tok_s.median, best_base.t3_tok_s.median)}; generate one request "
              f"{fastest_ours.label} / {fastest_base.label} {fastest_ours.generate_s.median / fastest_base.generate_s.median:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", nargs="+", choices=("turbo", "original"), default=["turbo", "original"])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--turbo-model-dir", type=Path, default=cache_root() / "bench-full-turbo")
    parser.add_argument("--threads", type=int, nargs="+", default=[len(os.sched_getaffinity(0))],
                        help="thread settings to compare, each on both sides (default: every core)")
    parser.add_argument("--split", default=None, help="A,B: also ours with t3_threads=A, s3gen_threads=B")
    parser.add_argument("--tokens", type=int, default=100, help="speech tokens per text")
    parser.add_argument("--reps", type=int, default=2, help="one-request measurements per side")
    parser.add_argument("--concurrency", type=int, default=8, help="texts at once (1: skip those rows)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the baseline's T3 runs (the original uses CUDA when there is one)")
    parser.add_argument("--min-free-gib", type=float, default=MIN_FREE_GIB,
                        help="refuse to start with less memory available (full-size models need about 7 GiB)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cores = len(os.sched_getaffinity(0))
    split = tuple(int(x) for x in args.split.split(",")) if args.split else None
    if args.tokens < 2 or args.reps < 1 or args.concurrency < 1 or not all(1 <= t <= cores for t in args.threads) \
            or (split and (len(split) != 2 or not all(1 <= t <= cores for t in split))):
        parser.error(f"--tokens >= 2, --reps and --concurrency >= 1, thread counts in [1, {cores}], --split A,B")
    free_gib = psutil.virtual_memory().available / 2**30
    if free_gib < args.min_free_gib:
        parser.error(f"only {free_gib:.1f} GiB of memory available (--min-free-gib {args.min_free_gib})")

    families = {
        "original": Family("original", args.model_dir.expanduser(), 10),
        "turbo": Family("turbo", args.turbo_model_dir.expanduser(), 2),
    }
    for name in args.family:
        family = families[name]
        weights = "t3_turbo_v1.safetensors" if family.turbo else "t3_cfg.safetensors"
        if not (family.model_dir / weights).is_file():
            make_test_model(family.model_dir, size="full", seed=0, variant=name)
        groups = [measure(family, args, t, t, not args.skip_baseline) for t in args.threads]
        if split:
            groups.append((measure(family, args, split[0], split[1], False)[0], None))
        report(family, args, groups)


if __name__ == "__main__":
    main()
