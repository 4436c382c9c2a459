"""OpenAI's ``speed`` (0.25-4.0): the audio played faster or slower at the same pitch, as it streams.

FFmpeg's ``atempo`` filter (WSOLA time stretching, through PyAV, already the server's encoder)
takes 0.5-2.0 per stage, so other speeds chain stages (4.0 = 2.0 x 2.0). It holds back a little
audio (its overlap window) until more comes, and its output length is off the exact 1/speed by
up to a few % on short clips, so the last release pads (with silence) or trims the tail to
exactly round(input samples / speed).

A speed change removes the Perth watermark (README, Watermark), so a changed stream is made
unmarked and marked after the change, as the library marks its streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import av
import av.filter
import numpy as np

from vllm_chatterbox.server.encoding import SAMPLE_RATE
from vllm_chatterbox.server.streaming import close_stream
from vllm_chatterbox.watermark import PerthWatermarker, StreamMarker

MIN_SPEED, MAX_SPEED = 0.25, 4.0
_STAGE_MIN, _STAGE_MAX = 0.5, 2.0  # atempo's range per filter


def atempo_stages(speed: float) -> list[float]:
    """Factors within atempo's range whose product is ``speed``."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be in [{MIN_SPEED}, {MAX_SPEED}], got {speed}")
    stages = []
    while speed > _STAGE_MAX:
        stages.append(_STAGE_MAX)
        speed /= _STAGE_MAX
    while speed < _STAGE_MIN:
        stages.append(_STAGE_MIN)
        speed /= _STAGE_MIN
    return [*stages, speed]


class TempoChanger:
    """One stream's speed change: ``feed`` each piece, then ``finish``; each returns the changed
    samples that are ready. Together they are exactly round(input samples / speed) long."""

    def __init__(self, speed: float, sample_rate: int = SAMPLE_RATE):
        self.speed = speed
        self.sample_rate = sample_rate
        graph = av.filter.Graph()
        node = graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono", time_base=f"1/{sample_rate}")
        for factor in atempo_stages(speed):
            stage = graph.add("atempo", repr(factor))
            node.link_to(stage)
            node = stage
        sink = graph.add("abuffersink")
        node.link_to(sink)
        graph.configure()
        self._graph = graph
        self._consumed = 0
        self._released = 0
        self.atempo_samples: int | None = None  # atempo's own output length, known at the end

    @property
    def target(self) -> int:
        """The length of the changed audio so far: round(input samples / speed)."""
        return round(self._consumed / self.speed)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return samples
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._consumed
        self._consumed += samples.size
        self._graph.push(frame)
        return self._release(self._pull())

    def finish(self) -> np.ndarray:
        self._graph.push(None)
        out = self._pull()
        self.atempo_samples = self._released + out.size
        target = self.target
        missing = target - self._released - out.size
        if missing > 0:
            out = np.concatenate([out, np.zeros(missing, dtype=np.float32)])
        return self._release(out[:max(0, target - self._released)])

    def _pull(self) -> np.ndarray:
        frames = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            frames.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(frames).astype(np.float32, copy=False) if frames else np.zeros(0, dtype=np.float32)

    def _release(self, out: np.ndarray) -> np.ndarray:
        self._released += out.size
        return out


async def change_speed(chunks: AsyncIterator[np.ndarray], speed: float,
                       watermarker: PerthWatermarker | None = None) -> AsyncIterator[np.ndarray]:
    """``chunks`` at ``speed``, pitch kept, marked after the change when a ``watermarker`` is
    given. Closing it closes ``chunks``."""
    changer = TempoChanger(speed)
    marker = None if watermarker is None else StreamMarker(watermarker, SAMPLE_RATE)

    async def marked(samples: np.ndarray, final: bool = False) -> np.ndarray:
        if marker is None or not (samples.size or final):
            return samples
        return await asyncio.to_thread(marker.feed, samples, final)

    released = 0
    try:
        async for chunk in chunks:
            out = await marked(changer.feed(chunk))
            if out.size:
                released += out.size
                yield out
        out = await marked(changer.finish(), final=True)
        # The marker releases whole 10 ms hops: the few samples it cuts are made up with silence.
        out = np.concatenate([out, np.zeros(max(0, changer.target - released - out.size), dtype=np.float32)])
        if out.size:
            yield out
    finally:
        await close_stream(chunks)
