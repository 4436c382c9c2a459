"""Text to audio with T3 and S3Gen overlapped.

vLLM's engine core decodes T3 in its own process. While it works, this process collects the
requests that have finished and turns them into audio with S3Gen, in batches of similar length,
so vocoding starts long before the last text has its tokens (no "all T3 first" barrier).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from vllm_chatterbox.t3.contract import T3Client, T3Request
from vllm_chatterbox.t3.engine import T3Batch, T3Engine
from vllm_chatterbox.voice.voice import Voice

if TYPE_CHECKING:
    from vllm_chatterbox.s3gen.model import S3Gen

logger = logging.getLogger(__name__)

# While T3 is still decoding, finished requests wait for company at most this long (or until
# this many have gathered) before S3Gen runs on them: batches for throughput, bounded latency.
DEFAULT_S3GEN_BATCH = 8
DEFAULT_MAX_WAIT_S = 0.25


@dataclass(frozen=True)
class AudioJob:
    request: T3Request
    voice: Voice
    n_timesteps: int
    seed: int | None


def s3gen_seed(seed: int | None) -> int:
    """The seed of one item's S3Gen noise, a function of (seed, frame) so that batching and
    streaming cannot change it; None draws one from torch's global RNG."""
    if seed is None:
        return int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return seed % 2**63


def synthesize(t3_engine: T3Engine, t3_client: T3Client, s3gen: S3Gen, jobs: Sequence[AudioJob], *,
               s3gen_batch: int = DEFAULT_S3GEN_BATCH, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> Iterator[tuple[int, list[int], np.ndarray]]:
    """Yield ``(index, speech_tokens, waveform)`` per job as soon as its audio is ready.

    Leaving early (an error, a break, KeyboardInterrupt) aborts the T3 requests still running.
    """
    ready: list[tuple[int, list[int]]] = []
    oldest_ready = 0.0
    with T3Batch(t3_engine, [job.request for job in jobs]) as t3_batch:
        while t3_batch.unfinished or ready:
            if t3_batch.unfinished:
                # Wait for T3 only as long as the oldest vocoding candidate may still wait.
                wait = None if not ready else max(0.0, max_wait_s - (time.monotonic() - oldest_ready))
                for index, result in t3_batch.next_finished(wait):
                    if not ready:
                        oldest_ready = time.monotonic()
                    ready.append((index, t3_client.speech_tokens(result)))
            if ready and (len(ready) >= s3gen_batch or not t3_batch.unfinished or time.monotonic() - oldest_ready >= max_wait_s):
                # Once T3 is done, S3Gen gets everything left and sorts it into length groups itself.
                take = len(ready) if not t3_batch.unfinished else s3gen_batch
                batch, ready = ready[:take], ready[take:]
                oldest_ready = time.monotonic()
                yield from _vocode(s3gen, jobs, batch)


def _vocode(s3gen: S3Gen, jobs: Sequence[AudioJob], batch):
    empty = [(i, tokens) for i, tokens in batch if not tokens]
    for index, tokens in empty:
        logger.warning("text %d produced no speech tokens; returning silence", index)
        yield index, tokens, np.zeros(0, dtype=np.float32)
    batch = [(i, tokens) for i, tokens in batch if tokens]
    if not batch:
        return
    # All items of one call share n_timesteps; group by it.
    for steps in sorted({jobs[i].n_timesteps for i, _ in batch}):
        group = [(i, tokens) for i, tokens in batch if jobs[i].n_timesteps == steps]
        wavs = s3gen.inference(
            [tokens for _, tokens in group], [jobs[i].voice for i, _ in group], n_timesteps=steps,
            seeds=[s3gen_seed(jobs[i].seed) for i, _ in group],
        )
        for (index, tokens), wav in zip(group, wavs):
            yield index, tokens, wav
