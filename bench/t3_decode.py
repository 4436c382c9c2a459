"""T3 speech-token throughput: the original's one-text-at-a-time loop vs our vLLM engine.

Not a test. Uses a random-weight model at the released size (``make_test_model(size="full")``:
30 layers, hidden 1024, fp32), created once under ``--model-dir``.

* baseline: ``reference.t3.ReferenceT3.generate``, the original's inference loop (HF
  ``LlamaModel``, batch of two rows cond/uncond, KV cache, CFG -> repetition penalty ->
  temperature -> min_p -> top_p -> ``torch.multinomial``), one text at a time.
  Its settings are the original's (chatterbox-tts 0.1.7: ``LLAMA_520M_CONFIG_DICT`` sets
  ``attn_implementation="sdpa"``, ``T3.inference`` keeps HF's default ``DynamicCache``, the
  weights load as fp32, torch threads are left at torch's default); the table header prints the
  values actually in effect.
* ours: ``ChatterboxTTS.from_dir`` with ``--concurrency`` requests kept in flight (a new one is
  submitted as one finishes), the public default sampling parameters, so vLLM decodes them as
  one continuous batch. Each level runs max(concurrency, ``--baseline-texts``) texts, so level 1
  runs the baseline's texts one at a time. ``--dtype float32 bfloat16`` runs one engine per T3
  dtype, one after the other, in the same table.

Every text produces ``--max-new-tokens`` tokens unless the stop token comes first (random
weights rarely emit it); tokens/s = tokens actually produced / wall time, prompt building and
prefill included, engine start and one small warm-up request excluded. ``cpu s`` is the CPU time
of this process and its children (vLLM's engine-core and worker processes) over the same span:
how much of the machine each side used.
The baseline runs first and is freed before vLLM starts, so the two never hold weights at once.

Threads: both sides use ``--threads`` compute threads: the baseline through
``torch.set_num_threads``, our engine through ``t3_threads`` (the threads of vLLM's engine-core
process, where the model runs on a CPU). ``--bind`` pins both to the first ``threads`` cores (the
engine process inherits the pinning from this process when it starts); ``--no-bind`` (default)
lets them float, the robust choice on a shared machine, where a team of two OpenMP threads stalls
whenever either is descheduled.

    python bench/t3_decode.py                       # from the repository root
    python bench/t3_decode.py --concurrency 32 --max-new-tokens 32 --baseline-texts 0 --threads 2 --bind
    python bench/t3_decode.py --concurrency 32 --max-new-tokens 32 --dtype float32 bfloat16
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The baseline lives at the repository root (reference/t3.py); make the root importable
# when the script is run as ``python bench/t3_decode.py``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import torch  # noqa: E402

from bench.common import EXAGGERATION, SAMPLING, WARMUP_TEXT, WARMUP_TOKENS, reference_speech_tokens  # noqa: E402
from vllm_chatterbox.config import T3_DTYPES, ChatterboxConfig  # noqa: E402
from vllm_chatterbox.t3.engine import DEFAULT_BLOCK_SIZE, cache_root  # noqa: E402
from vllm_chatterbox.demo_model import make_test_model  # noqa: E402
from vllm_chatterbox.text import EnglishTokenizer, text_to_token_ids  # noqa: E402
from vllm_chatterbox.voice.voice import Voice  # noqa: E402

logger = logging.getLogger("bench.t3_decode")

# Mixed lengths, about 5 to 60 text tokens; request i uses TEXTS[i % len(TEXTS)].
TEXTS = [
    "Hello there.",
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Please remember to bring your umbrella, because the forecast says it will rain all afternoon.",
    "Yes.",
    "In the beginning of the project we measured everything twice, and then we measured it again "
    "just to be sure that nothing had changed while we were not looking.",
    "Turn left at the second traffic light.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Good morning! How did you sleep last night?",
    "A journey of a thousand miles begins with a single step, or so the old saying goes, though "
    "most journeys today begin with a search for the cheapest ticket.",
    "The meeting has been moved to Thursday at three o'clock.",
    "Could you read that number back to me, slowly, one digit at a time?",
    "Thanks for listening, and have a wonderful evening.",
]


DTYPE_LABELS = {"float32": "fp32", "bfloat16": "bf16"}


@dataclass(frozen=True)
class Row:
    mode: str
    concurrency: int
    texts: int
    tokens: int
    seconds: float
    cpu_seconds: float  # this process and its children (vLLM's engine core and worker)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def cpu_seconds() -> float:
    """CPU time used so far by this process and its live descendants."""
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def texts_for(count: int) -> list[str]:
    return [TEXTS[i % len(TEXTS)] for i in range(count)]


def configure_threads(threads: int, bind: bool) -> list[int] | None:
    """Same compute-thread count for both sides (see the module docstring); the cores to pin to."""
    available = sorted(os.sched_getaffinity(0))
    if threads > len(available):
        raise ValueError(f"--threads {threads} exceeds the {len(available)} CPUs available")
    torch.set_num_threads(threads)
    return available[:threads] if bind else None


def run_baseline(model_dir: Path, cfg: ChatterboxConfig, text_ids: list[list[int]], warmup_ids: list[int],
                 voice: Voice, max_new_tokens: int, cores: list[int] | None) -> tuple[Row, str]:
    """The baseline's row and a line naming the settings it ran with."""
    import transformers
    from reference.t3 import ReferenceT3

    everything = os.sched_getaffinity(0)
    if cores is not None:
        os.sched_setaffinity(0, cores)
    try:
        reference = ReferenceT3(model_dir / "t3_cfg.safetensors", cfg.t3)
        settings = (f"baseline: transformers {transformers.__version__} LlamaModel, attn_implementation "
                    f"{reference.tfmr.config._attn_implementation}, DynamicCache, "
                    f"{next(reference.tfmr.parameters()).dtype}, torch {torch.__version__} with "
                    f"{torch.get_num_threads()} thread(s); batch of 2 rows (cond, uncond), one text at a time")
        generator = torch.Generator().manual_seed(0)

        def one(ids: list[int], steps: int) -> int:
            return len(reference_speech_tokens(reference, voice, ids, steps, generator))

        one(warmup_ids, WARMUP_TOKENS)
        tokens, start, cpu_start = 0, time.perf_counter(), cpu_seconds()
        for i, ids in enumerate(text_ids):
            tokens += one(ids, max_new_tokens)
            logger.info("baseline text %d/%d: %d tokens so far, %.1f s", i + 1, len(text_ids), tokens,
                        time.perf_counter() - start)
        row = Row("baseline", 1, len(text_ids), tokens, time.perf_counter() - start, cpu_seconds() - cpu_start)
        return row, settings
    finally:
        os.sched_setaffinity(0, everything)


def kv_cache_bytes(cfg: ChatterboxConfig, max_model_len: int, max_concurrency: int, dtype: str) -> int:
    """KV blocks for every concurrent request at full length (both CFG branches), plus one more
    request's worth for the warm-up request's cached blocks."""
    t3 = cfg.t3
    per_token = 2 * 2 * t3.num_kv_heads * t3.head_dim * t3.num_layers * getattr(torch, dtype).itemsize  # K, V; 2 branches
    blocks = math.ceil(max_model_len / DEFAULT_BLOCK_SIZE) * (max_concurrency + 1)
    return blocks * DEFAULT_BLOCK_SIZE * per_token


def run_concurrent(engine, requests: list, concurrency: int) -> int:
    """Keep ``concurrency`` requests in flight until all are done; returns the tokens produced."""
    done: queue.Queue = queue.Queue()
    pending, in_flight, tokens = list(requests), 0, 0
    while pending or in_flight:
        while pending and in_flight < concurrency:
            engine.submit(pending.pop(0), lambda event: event[0] != "tokens" and done.put(event))
            in_flight += 1
        kind, value = done.get()
        if kind == "error":
            raise value
        in_flight -= 1
        tokens += len(value.token_ids)
    return tokens


def run_vllm(model_dir: Path, cfg: ChatterboxConfig, concurrencies: list[int], min_texts: int,
             max_new_tokens: int, max_model_len: int, dtype: str, threads: int, cores: list[int] | None) -> list[Row]:
    from vllm_chatterbox.tts import ChatterboxTTS

    kv_bytes = kv_cache_bytes(cfg, max_model_len, max(concurrencies), dtype)
    logger.info("starting vLLM (%s): max_model_len %d, KV cache %.2f GiB", dtype, max_model_len, kv_bytes / 2**30)
    everything = os.sched_getaffinity(0)
    if cores is not None:
        os.sched_setaffinity(0, cores)  # the engine process inherits it
    try:
        tts = ChatterboxTTS.from_dir(model_dir, dtype=dtype, max_model_len=max_model_len,
                                     kv_cache_memory_bytes=kv_bytes, max_num_seqs=max(concurrencies), t3_threads=threads)
    finally:
        os.sched_setaffinity(0, everything)
    rows = []
    try:
        tts.t3_engine.generate(tts.prepare_t3_requests(WARMUP_TEXT, max_new_tokens=WARMUP_TOKENS))
        for concurrency in concurrencies:
            texts = texts_for(max(concurrency, min_texts))
            start, cpu_start = time.perf_counter(), cpu_seconds()
            requests = tts.prepare_t3_requests(texts, max_new_tokens=max_new_tokens, exaggeration=EXAGGERATION,
                                               **SAMPLING)
            tokens = run_concurrent(tts.t3_engine, requests, concurrency)
            row = Row(f"vllm {DTYPE_LABELS[dtype]}", concurrency, len(texts), tokens, time.perf_counter() - start,
                      cpu_seconds() - cpu_start)
            logger.info("vLLM %s at concurrency %d: %d tokens in %.1f s", dtype, concurrency, tokens, row.seconds)
            rows.append(row)
    finally:
        tts.t3_engine.shutdown()
    return rows


def print_table(rows: list[Row], baseline: Row | None, header: str) -> None:
    print(header)
    print(f"{'mode':<11}{'concurrency':>12}{'texts':>7}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}"
          f"{'vs baseline':>13}{'cpu s':>9}")
    for row in rows:
        ratio = f"{row.tokens_per_s / baseline.tokens_per_s:.2f}x" if baseline else "-"
        print(f"{row.mode:<11}{row.concurrency:>12}{row.texts:>7}{row.tokens:>8}{row.seconds:>9.1f}"
              f"{row.tokens_per_s:>10.2f}{ratio:>13}{row.cpu_seconds:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--baseline-texts", type=int, default=3, help="texts run by the baseline (0: skip it)")
    parser.add_argument("--dtype", nargs="+", choices=T3_DTYPES, default=["float32"],
                        help="T3 dtype(s) of our engine, one engine each (the baseline is always fp32)")
    parser.add_argument("--threads", type=int, default=1, help="compute threads, both sides")
    parser.add_argument("--bind", action=argparse.BooleanOptionalAction, default=False,
                        help="pin compute threads to the first --threads cores")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.max_new_tokens < 1 or args.baseline_texts < 0 or min(args.concurrency) < 1:
        parser.error("--max-new-tokens and --concurrency must be >= 1, --baseline-texts >= 0")

    default_threads = torch.get_num_threads()
    cores = configure_threads(args.threads, args.bind)
    model_dir = args.model_dir.expanduser()
    if not (model_dir / "t3_cfg.safetensors").is_file():
        make_test_model(model_dir, size="full", seed=0)
    cfg = ChatterboxConfig()
    tokenizer = EnglishTokenizer.from_file(model_dir / "tokenizer.json")

    def token_ids(text: str) -> list[int]:
        return text_to_token_ids(text, tokenizer, max_text_tokens=cfg.t3.max_text_len)

    longest_prompt = cfg.t3.cond_len + max(len(token_ids(t)) for t in TEXTS) + 2
    max_model_len = math.ceil((longest_prompt + args.max_new_tokens) / DEFAULT_BLOCK_SIZE) * DEFAULT_BLOCK_SIZE

    baseline, baseline_settings = None, None
    if args.baseline_texts:
        baseline, baseline_settings = run_baseline(model_dir, cfg, [token_ids(t) for t in texts_for(args.baseline_texts)],
                                token_ids(WARMUP_TEXT), Voice.load(model_dir / "conds.pt"), args.max_new_tokens,
                                cores)
        gc.collect()  # the reference model's weights go before vLLM loads its own
    rows = []
    for dtype in args.dtype:
        rows += run_vllm(model_dir, cfg, args.concurrency, args.baseline_texts, args.max_new_tokens, max_model_len,
                         dtype, args.threads, cores)
        gc.collect()

    header = (f"T3 full size (random weights), CPU, {args.threads} compute thread(s) "
              f"({'bound' if args.bind else 'unbound'}; torch's default here: {default_threads}), "
              f"max_new_tokens {args.max_new_tokens}")
    if baseline_settings:
        header += "\n" + baseline_settings
    print_table(([baseline] if baseline else []) + rows, baseline, header)
    fp32 = {r.concurrency: r for r in rows if r.mode == "vllm fp32"}
    for row in rows:
        if row.mode == "vllm bf16" and row.concurrency in fp32:
            print(f"bf16 / fp32 at concurrency {row.concurrency}: "
                  f"{row.tokens_per_s / fp32[row.concurrency].tokens_per_s:.2f}x")


if __name__ == "__main__":
    main()
