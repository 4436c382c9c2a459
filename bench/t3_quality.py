"""T3 fast-mode quality: bfloat16 against float32 teacher-forced logits, both through vLLM.

Not a test. Uses the full-size random-weight model (``make_test_model(size="full")``, created once
under ``--model-dir``, as ``bench/t3_decode.py`` does).

1. fp32 engine: a mixed batch (``--requests`` texts of 3 to 60 tokens; the built-in voice and
   random voices; CFG weights 0 to 1; exaggerations 0.3 to 1.2) decodes greedily for ``--steps``
   tokens. The logits recorder (``reference/recorder.py``) saves every step's raw
   ``[cond | uncond]`` logits.
2. bf16 engine (``dtype="bfloat16"``): the same requests, each forced to the fp32 tokens, so both
   engines see the same history at every step; recorded the same way.
3. Deviation over all steps of all requests: raw logits max |Δ| and relative L2 (cond and uncond
   together), the same for the guided logits (CFG + repetition penalty, what is sampled from),
   and greedy agreement: the share of steps at which bf16's guided argmax is fp32's token.

``--hf-bf16`` also runs the plain-PyTorch reference (transformers' ``LlamaModel``, the
original's backbone) cast to bf16 over the same tokens against its fp32 self: what a bf16 port
of the original deviates by, next to ours.

Run from the repository root (the vLLM worker imports the recorder from ``reference``)::

    PYTHONPATH=$PWD python bench/t3_quality.py --requests 8 --steps 32
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import queue
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.t3_decode import TEXTS  # noqa: E402
from reference.recorder import RECORDER, read_recorded  # noqa: E402
from vllm_chatterbox.config import ChatterboxConfig  # noqa: E402
from vllm_chatterbox.t3.engine import DEFAULT_BLOCK_SIZE, cache_root  # noqa: E402
from vllm_chatterbox.demo_model import make_test_model, random_voice  # noqa: E402
from vllm_chatterbox.voice.voice import Voice  # noqa: E402

logger = logging.getLogger("bench.t3_quality")

REPETITION_PENALTY = 1.2
CFG_WEIGHTS = [0.5, 0.3, 0.0, 1.0]
EXAGGERATIONS = [0.5, 0.9, 0.3, 1.2]


@dataclass(frozen=True)
class Job:
    tag: str
    text: str
    voice: Voice
    exaggeration: float
    cfg_weight: float


def jobs_for(count: int, builtin: Voice) -> list[Job]:
    voices = [builtin, *(random_voice(torch.Generator().manual_seed(seed), prompt_tokens=tokens)
                         for seed, tokens in ((11, 150), (12, 60), (13, 100)))]
    return [Job(f"job{i}", TEXTS[i % len(TEXTS)], voices[i % len(voices)], EXAGGERATIONS[i % len(EXAGGERATIONS)],
                CFG_WEIGHTS[(i + i // len(voices)) % len(CFG_WEIGHTS)]) for i in range(count)]


def record(model_dir: Path, dtype: str, jobs: list[Job], steps: int, record_dir: Path,
           forced: list[list[int]] | None) -> list[list[int]]:
    """Run the jobs on a fresh engine of ``dtype`` (greedy, or forced); returns their tokens."""
    from vllm_chatterbox.tts import ChatterboxTTS

    tts = ChatterboxTTS.from_dir(model_dir, dtype=dtype, extra_logits_processors=[RECORDER],
                                 max_num_seqs=len(jobs), max_model_len=max_model_len(steps),
                                 kv_cache_memory_bytes=1 << 30)
    try:
        requests = [tts.prepare_t3_requests(j.text, j.voice, exaggeration=j.exaggeration, cfg_weight=j.cfg_weight,
                                            repetition_penalty=REPETITION_PENALTY, temperature=0,
                                            max_new_tokens=steps)[0] for j in jobs]
        finished: queue.Queue = queue.Queue()
        for i, (job, request) in enumerate(zip(jobs, requests)):
            extra = {"record": {"dir": str(record_dir), "tag": job.tag, "forced": None if forced is None else forced[i]}}
            tts.t3_engine.submit(request, lambda event, i=i: event[0] != "tokens" and finished.put((i, event)),
                                 extra_args=extra)
        tokens: list = [None] * len(jobs)
        for _ in jobs:  # no time limit: on a busy machine a step can take minutes
            i, (kind, value) = finished.get()
            if kind == "error":
                raise value
            tokens[i] = list(value.token_ids)
        return tokens
    finally:
        tts.t3_engine.shutdown()


def max_model_len(steps: int) -> int:
    cfg = ChatterboxConfig().t3
    longest = cfg.cond_len + 2 + 2 + max(len(t) for t in TEXTS)  # characters bound the text tokens
    return math.ceil((longest + steps) / DEFAULT_BLOCK_SIZE) * DEFAULT_BLOCK_SIZE


def guided(raw: np.ndarray, tokens: list[int], cfg_weight: float, start_token: int) -> np.ndarray:
    """(steps, V) guided logits from raw (steps, 2, V): CFG, then the repetition penalty over
    {BOS} + the tokens before each step (the original's order)."""
    cond, uncond = raw[:, 0].astype(np.float64), raw[:, 1].astype(np.float64)
    out = cond + cfg_weight * (cond - uncond)
    penalised = {start_token}
    for step, token in enumerate(tokens):
        ids = sorted(penalised)
        values = out[step, ids]
        out[step, ids] = np.where(values < 0, values * REPETITION_PENALTY, values / REPETITION_PENALTY)
        penalised.add(token)
    return out


def deviation(ours: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """max |Δ| and relative L2 of ``ours`` against ``exact``."""
    diff = ours.astype(np.float64) - exact.astype(np.float64)
    return float(np.abs(diff).max()), float(np.linalg.norm(diff) / np.linalg.norm(exact.astype(np.float64)))


def hf_bf16_deviation(model_dir: Path, jobs: list[Job], tokens: list[list[int]]) -> tuple[float, float]:
    """The original's backbone (transformers LlamaModel) in bf16 against itself in fp32, raw
    logits teacher-forced on the same tokens; prompt and fed-back embeddings rounded to bf16 as
    a bf16 model's inputs are."""
    from reference.t3 import ReferenceT3
    from vllm_chatterbox.text import EnglishTokenizer, text_to_token_ids

    cfg = ChatterboxConfig().t3
    tokenizer = EnglishTokenizer.from_file(model_dir / "tokenizer.json")
    reference = ReferenceT3(model_dir / "t3_cfg.safetensors", cfg)
    prefills = []
    for job in jobs:
        conditioning = reference.conditioning(job.voice.speaker_emb, job.voice.cond_prompt_speech_tokens,
                                              job.exaggeration)
        text_ids = text_to_token_ids(job.text, tokenizer, max_text_tokens=cfg.max_text_len)
        prefills.append(reference.prefill_embeds(conditioning, text_ids))
    exact = [reference.teacher_forced_logits(p, t).numpy() for p, t in zip(prefills, tokens)]
    logger.info("HF reference fp32 done")
    reference.tfmr.bfloat16()
    reference.w["speech_head.weight"] = reference.w["speech_head.weight"].bfloat16()
    speech_input = reference._speech_input
    reference._speech_input = lambda token, k: speech_input(token, k).bfloat16()
    ours = [reference.teacher_forced_logits(p.bfloat16(), t).float().numpy() for p, t in zip(prefills, tokens)]
    return deviation(np.concatenate(ours), np.concatenate(exact))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=cache_root() / "bench-full")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--hf-bf16", action="store_true", help="also measure transformers' LlamaModel in bf16")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.requests < 1 or args.steps < 1:
        parser.error("--requests and --steps must be >= 1")
    model_dir = args.model_dir.expanduser()
    if not (model_dir / "t3_cfg.safetensors").is_file():
        make_test_model(model_dir, size="full", seed=0)
    cfg = ChatterboxConfig().t3
    jobs = jobs_for(args.requests, Voice.load(model_dir / "conds.pt"))

    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir, bf16_dir = Path(tmp, "fp32"), Path(tmp, "bf16")
        fp32_dir.mkdir()
        bf16_dir.mkdir()
        tokens = record(model_dir, "float32", jobs, args.steps, fp32_dir, None)
        record(model_dir, "bfloat16", jobs, args.steps, bf16_dir, tokens)
        raw32, raw16, guided32, guided16 = [], [], [], []
        agree = steps = 0
        for job, forced in zip(jobs, tokens):
            exact = read_recorded(fp32_dir, job.tag, len(forced))
            ours = read_recorded(bf16_dir, job.tag, len(forced))
            raw32.append(exact)
            raw16.append(ours)
            g32 = guided(exact, forced, job.cfg_weight, cfg.start_speech_token)
            g16 = guided(ours, forced, job.cfg_weight, cfg.start_speech_token)
            guided32.append(g32)
            guided16.append(g16)
            agree += int((g16.argmax(-1) == np.asarray(forced)).sum())
            steps += len(forced)
    raw_max, raw_rel = deviation(np.concatenate(raw16), np.concatenate(raw32))
    guided_max, guided_rel = deviation(np.concatenate(guided16), np.concatenate(guided32))
    scale = float(np.abs(np.concatenate(raw32)).max())

    print(f"T3 full size (random weights), bf16 vs fp32 teacher-forced through vLLM: {len(jobs)} requests, "
          f"{steps} steps, logits up to |{scale:.1f}|")
    print(f"{'':<26}{'max |Δ|':>10}{'rel L2':>10}")
    print(f"{'raw logits (cond|uncond)':<26}{raw_max:>10.4f}{raw_rel:>10.2e}")
    print(f"{'guided logits':<26}{guided_max:>10.4f}{guided_rel:>10.2e}")
    print(f"greedy agreement: {agree}/{steps} = {agree / steps:.3f}")
    if args.hf_bf16:
        hf_max, hf_rel = hf_bf16_deviation(model_dir, jobs, tokens)
        print(f"{'HF LlamaModel bf16 (raw)':<26}{hf_max:>10.4f}{hf_rel:>10.2e}")


if __name__ == "__main__":
    main()
