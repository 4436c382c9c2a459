"""Prometheus metrics of one server (its own registry, so two apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("chatterbox_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.time_to_first_audio = Histogram(
            "chatterbox_time_to_first_audio_seconds",
            "Speech requests: seconds from arrival to the first audio ready to send",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.speech_duration = Histogram(
            "chatterbox_speech_request_seconds", "Speech requests: seconds from arrival to the last byte",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("chatterbox_audio_seconds", "Seconds of audio produced", registry=r)
        self.queue_depth = Gauge("chatterbox_queue_depth", "Speech requests admitted and still waiting for "
                                 "their first audio", registry=r)
        self.in_flight = Gauge("chatterbox_speech_requests_in_flight", "Speech requests admitted and not finished",
                               registry=r)
        self.aborted = Counter("chatterbox_speech_requests_aborted",
                               "Speech requests whose client went away before the end (work cancelled)",
                               registry=r)
        self.rejected = Counter("chatterbox_speech_requests_rejected", "Speech requests refused because the "
                                "queue was full (429)", registry=r)
        self.t3_tokens = Counter("chatterbox_t3_tokens", "Speech tokens from T3 handed to S3Gen", registry=r)
        self.t3_tokens_per_second = Gauge("chatterbox_t3_tokens_per_second",
                                          "Speech tokens from T3 per second, over the last 10 s", registry=r)
        self.t3_requests_submitted = Gauge("chatterbox_t3_requests_submitted",
                                           "T3 requests sent to vLLM since start (one per text chunk, "
                                           "one per voice warmed)", registry=r)
        self.t3_requests_unfinished = Gauge("chatterbox_t3_requests_unfinished",
                                            "T3 requests vLLM is running or waiting to run", registry=r)
        self.s3gen_batch_size = Histogram("chatterbox_s3gen_batch_size", "Streams per batched S3Gen call",
                                          buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.engine_ready = Gauge("chatterbox_engine_ready", "1 while an engine is loaded and serving", registry=r)
        self.engine_restarts = Counter("chatterbox_engine_restarts", "Engine restarts after its death (each "
                                       "attempt to load a new engine)", registry=r)
        self.conversion_pieces = Counter("chatterbox_conversion_pieces", "Source pieces converted by voice "
                                         "conversion (a source over max_piece_seconds is cut into pieces)",
                                         registry=r)

