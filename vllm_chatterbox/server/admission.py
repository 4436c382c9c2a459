"""Admission of speech requests: at most ``max_queue`` at once (running, or waiting for their
first audio), a 429 with Retry-After beyond that, and the in-flight accounting in the metrics."""

from __future__ import annotations

import math
import time

from vllm_chatterbox.server.errors import APIError
from vllm_chatterbox.server.metrics import ServerMetrics


class Slot:
    """One admitted speech request; released exactly once."""

    def __init__(self, admission: Admission):
        self.admission = admission
        self.metrics = admission.metrics
        self.arrival = time.perf_counter()
        self.waiting = True
        self.released = False
        self.metrics.in_flight.inc()
        self.metrics.queue_depth.inc()

    def first_audio(self) -> None:
        if self.waiting:
            self.waiting = False
            self.metrics.queue_depth.dec()
            self.metrics.time_to_first_audio.observe(time.perf_counter() - self.arrival)

    def release(self, completed: bool) -> None:
        if self.released:
            return
        self.released = True
        if self.waiting:
            self.waiting = False
            self.metrics.queue_depth.dec()
        self.metrics.in_flight.dec()
        self.admission.admitted -= 1
        elapsed = time.perf_counter() - self.arrival
        if completed:
            self.metrics.speech_duration.observe(elapsed)
            self.admission.mean_duration += 0.2 * (elapsed - self.admission.mean_duration)
        else:
            self.metrics.aborted.inc()


class Admission:
    def __init__(self, max_queue: int, metrics: ServerMetrics):
        self.max_queue = max_queue
        self.metrics = metrics
        self.admitted = 0
        self.mean_duration = 5.0  # seconds; a moving average that sizes Retry-After

    def admit(self) -> Slot:
        """A slot for one more request, or a 429 with Retry-After when ``max_queue`` are admitted."""
        if self.admitted >= self.max_queue:
            self.metrics.rejected.inc()
            waves = self.admitted / max(1, self.max_queue)
            retry = min(60, max(1, math.ceil(self.mean_duration * waves)))
            raise APIError(429, f"the server is busy ({self.admitted} speech requests queued or running, the "
                                f"limit is {self.max_queue}); retry after {retry} s",
                           code="queue_full", headers={"Retry-After": str(retry)})
        self.admitted += 1
        return Slot(self)
