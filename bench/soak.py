"""Soak test of ``vllm-chatterbox serve``: N concurrent clients for M minutes, every answer checked.

Not a speed benchmark: it looks for what breaks when a server runs for a while. It starts the real
server (``tests/server/helpers.ServerProcess``) on the demo model (tiny random weights, made on
the spot; ``--model`` for another) on a free loopback port, then runs ``--clients`` threads until
``--minutes`` have passed. Each client, with its own seeded choices, sends in a mix:

- one-shot requests (the whole body read, every ``response_format``),
- streamed audio (read as it comes) and SSE streams (``speech.audio.delta`` events then
  ``speech.audio.done``),
- streams of a long text that it abandons after the first audio (a disconnect mid-stream),
- now and then a voice upload, a request in that voice, and its deletion.

Every status code is counted; every complete response is decoded (pcm as s16le, wav/flac with
soundfile, mp3/opus/aac with PyAV, as the server's own tests do) and its length checked against
what the request can produce. At the end the server's Prometheus counters are compared with what
the clients saw: speech requests aborted == disconnects made, nothing left in flight or unfinished
in vLLM, and the server's count of responses by route and status == the clients' count. The
resident memory of the server and its engine process(es) is sampled throughout.

    PYTHONPATH=. python bench/soak.py --clients 32 --minutes 10

Exit status 0 when the verdict passes (no lost or garbled response, no 5xx, counters consistent,
RSS growth after warm-up within ``--max-rss-growth-mib``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from tests.server.helpers import AUTH, ServerProcess, reference_signal, wav_bytes

logger = logging.getLogger("soak")

SAMPLE_RATE = 24000
SPEECH_ROUTE = "/v1/audio/speech"
VOICES_ROUTE = "/v1/audio/voices"
VOICE_ROUTE = "/v1/audio/voices/{name}"
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
STREAM_FORMATS = ("pcm", "wav", "mp3", "opus")  # read part by part as they come
SSE_FORMATS = ("pcm", "mp3")
TEXTS = (
    "The station is two streets north of the old market.",
    "Please remember to water the plants while I am away.",
    "A light rain fell over the harbour as the boats came home.",
    "Our meeting moved to Thursday afternoon, right after lunch.",
    "Turn left at the bakery, then follow the river to the bridge.",
)
# Long enough to be cut into several chunks (generate_long's 150 text tokens): the stream is far
# from its end when the client leaves after its first audio.
LONG_TEXT = " ".join(f"The quick brown fox number {i} jumps over the lazy dog near the quiet river bank."
                     for i in range(16))
# What a client does, and how often (relative weights).
MIX = {"oneshot": 4, "stream": 3, "sse": 2, "disconnect": 1.5, "voice": 0.5}
FIRST_KINDS = ("voice", "disconnect", "sse", "stream", "oneshot")
LOSSLESS = ("pcm", "wav", "flac")
# Encoder delay and padding of the lossy codecs, seconds.
CODEC_SLACK_S = 0.2


@dataclass
class Outcome:
    kind: str
    route: str
    status: int | None  # None: no response (transport error)
    seconds: float
    audio_seconds: float = 0.0
    problem: str | None = None  # lost or garbled, and why
    garbled: bool = False
    disconnected: bool = False  # the client left mid-stream on purpose


@dataclass
class SoakReport:
    settings: dict
    outcomes: list[Outcome]
    metrics_before: dict
    metrics_after: dict
    rss: list[tuple[float, int, int]]  # (seconds since start, server RSS, engine processes' RSS), bytes
    wall_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    verdict: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(ok for ok, _ in self.verdict.values())


# --- decoding ----------------------------------------------------------------------------------

def decode_audio(data: bytes, response_format: str) -> np.ndarray:
    """Float samples of a complete response body; raises on anything that does not decode."""
    if response_format == "pcm":
        if len(data) % 2:
            raise ValueError(f"pcm body of {len(data)} bytes, an odd number")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
    if response_format in ("wav", "flac"):
        import soundfile

        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        if rate != SAMPLE_RATE:
            raise ValueError(f"{response_format} at {rate} Hz")
        return samples
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        rate = stream.sample_rate
    samples = np.concatenate(frames).astype(np.float32) if frames else np.zeros(0, np.float32)
    # Opus decodes at 48 kHz: report the duration in 24 kHz samples.
    return samples[:: max(1, rate // SAMPLE_RATE)]


def check_audio(data: bytes, response_format: str, max_seconds: float) -> float:
    """Seconds of audio in a complete body; ValueError when it does not decode or cannot be right."""
    if not data and response_format != "wav":
        return 0.0  # no speech token at all (random weights may stop at once): no audio, a valid answer
    samples = decode_audio(data, response_format)
    if not np.all(np.isfinite(samples)):
        raise ValueError("non-finite samples")
    seconds = samples.size / SAMPLE_RATE
    slack = 0.0 if response_format in LOSSLESS else CODEC_SLACK_S
    if seconds > max_seconds + slack:
        raise ValueError(f"{seconds:.2f} s of audio, more than the {max_seconds:.2f} s the request can make")
    return seconds


def parse_sse(body: bytes) -> list[dict]:
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        if not block.startswith("data: "):
            raise ValueError(f"not an SSE data event: {block[:60]!r}")
        events.append(json.loads(block[len("data: "):]))
    return events


def check_sse(body: bytes, response_format: str, max_seconds: float) -> float:
    events = parse_sse(body)
    if not events or events[-1].get("type") != "speech.audio.done":
        raise ValueError(f"the stream does not end with speech.audio.done: {[e.get('type') for e in events[-3:]]}")
    deltas = events[:-1]
    if any(event.get("type") != "speech.audio.delta" for event in deltas):
        raise ValueError(f"unexpected events: {sorted({e.get('type') for e in deltas})}")
    data = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    seconds = check_audio(data, response_format, max_seconds)
    usage = events[-1].get("usage", {})
    if not (isinstance(usage.get("input_tokens"), int) and usage["input_tokens"] > 0
            and usage.get("total_tokens") == usage["input_tokens"] + usage.get("output_tokens", -1)):
        raise ValueError(f"bad usage {usage}")
    if response_format == "pcm" and usage["output_tokens"] != math.ceil(len(data) / 2 * 25 / SAMPLE_RATE):
        raise ValueError(f"usage says {usage['output_tokens']} speech tokens for {len(data) // 2} samples")
    return seconds


# --- metrics and memory ------------------------------------------------------------------------

def read_metrics(url: str) -> dict:
    """Every sample of /metrics: {name or name{labels}: value}."""
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=60).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def responses_by_route(metrics: dict, routes) -> collections.Counter:
    counts = collections.Counter()
    for name, value in metrics.items():
        if name.startswith("chatterbox_requests_total{"):
            labels = dict(part.split("=", 1) for part in name[name.index("{") + 1:-1].split(","))
            route, status = labels["route"].strip('"'), labels["status"].strip('"')
            if route in routes:
                counts[(route, int(status))] += int(value)
    return counts


def process_rss(pid: int) -> tuple[int, int]:
    """(RSS of the process, summed RSS of all its descendants: vLLM's engine core), bytes."""
    try:
        import psutil
    except ImportError:
        return _proc_rss(pid), sum(_proc_rss(child) for child in _proc_descendants(pid))
    process = psutil.Process(pid)
    engine = 0
    for child in process.children(recursive=True):
        try:
            engine += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return process.memory_info().rss, engine


def _proc_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def _proc_descendants(pid: int) -> list[int]:
    children = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
            children[parent].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# --- clients ------------------------------------------------------------------------------------

class Client:
    def __init__(self, url: str, index: int, seed: int, max_new_tokens: int, chunk_max_new_tokens: int,
                 voice_budget: list[int], budget_lock: threading.Lock):
        self.url, self.index = url, index
        self.rng = random.Random(seed * 1000 + index)
        self.max_new_tokens = max_new_tokens
        self.chunk_max_new_tokens = chunk_max_new_tokens
        self.voice_budget, self.budget_lock = voice_budget, budget_lock
        self.voices_made = 0
        self.outcomes: list[Outcome] = []

    def run(self, deadline: float) -> None:
        kinds, weights = zip(*MIX.items())
        # The clients start with different kinds (voice first), so even a short run has each.
        kind = FIRST_KINDS[self.index % len(FIRST_KINDS)]
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=600) as http:
            while time.monotonic() < deadline:
                if kind == "voice" and not self._take_voice_budget():
                    kind = "oneshot"
                getattr(self, f"_{kind}")(http)
                kind = self.rng.choices(kinds, weights)[0]

    def _take_voice_budget(self) -> bool:
        with self.budget_lock:
            if self.voice_budget[0] <= 0:
                return False
            self.voice_budget[0] -= 1
            return True

    def _body(self, response_format: str, **fields) -> dict:
        return {"model": "chatterbox", "input": self.rng.choice(TEXTS), "response_format": response_format,
                "seed": self.rng.randrange(1 << 30), "max_new_tokens": self.max_new_tokens, "n_timesteps": 2,
                **fields}

    def _max_seconds(self, body: dict) -> float:
        # One chunk for the short texts: its tokens at 25 per second.
        return body["max_new_tokens"] / 25

    def _record(self, outcome: Outcome, response: httpx.Response | None = None) -> None:
        if response is not None and response.status_code == 429:
            time.sleep(min(5.0, float(response.headers.get("retry-after", "1"))))
        self.outcomes.append(outcome)

    def _speech(self, http: httpx.Client, kind: str, body: dict, read) -> None:
        """One speech request; ``read(response)`` returns the body (or None: the client left)."""
        started = time.monotonic()
        try:
            with http.stream("POST", SPEECH_ROUTE, json=body) as response:
                data = read(response) if response.status_code == 200 else response.read()
        except httpx.HTTPError as exc:
            self._record(Outcome(kind, SPEECH_ROUTE, None, time.monotonic() - started,
                                 problem=f"lost: {type(exc).__name__}: {exc}"))
            return
        outcome = Outcome(kind, SPEECH_ROUTE, response.status_code, time.monotonic() - started)
        if response.status_code == 200 and data is None:
            outcome.disconnected = True
        elif response.status_code == 200:
            try:
                if body.get("stream_format") == "sse":
                    outcome.audio_seconds = check_sse(data, body["response_format"], self._max_seconds(body))
                else:
                    outcome.audio_seconds = check_audio(data, body["response_format"], self._max_seconds(body))
            except Exception as exc:  # any failure to decode is the finding
                outcome.garbled = True
                outcome.problem = f"garbled {body['response_format']}: {type(exc).__name__}: {exc}"
        elif response.status_code != 429:
            outcome.problem = f"status {response.status_code}: {data[:200]!r}"
        self._record(outcome, response)

    def _oneshot(self, http: httpx.Client) -> None:
        self._speech(http, "oneshot", self._body(self.rng.choice(FORMATS)), lambda response: response.read())

    def _stream(self, http: httpx.Client) -> None:
        body = self._body(self.rng.choice(STREAM_FORMATS))
        self._speech(http, "stream", body, lambda response: b"".join(response.iter_raw()))

    def _sse(self, http: httpx.Client) -> None:
        body = self._body(self.rng.choice(SSE_FORMATS), stream_format="sse")
        self._speech(http, "sse", body, lambda response: b"".join(response.iter_raw()))

    def _disconnect(self, http: httpx.Client) -> None:
        body = self._body(self.rng.choice(("pcm", "mp3", "wav")), input=LONG_TEXT,
                          max_new_tokens=self.chunk_max_new_tokens,
                          stream_format=self.rng.choice(("audio", "sse")))

        def leave_after_first_part(response: httpx.Response) -> None:
            for _ in response.iter_raw():
                break  # the first audio; closing the response then drops the connection

        self._speech(http, "disconnect", body, leave_after_first_part)

    def _voice(self, http: httpx.Client) -> None:
        """Upload a voice, speak in it, delete it, and check that it is gone."""
        self.voices_made += 1
        name = f"soak-{self.index}-{self.voices_made}"
        reference = wav_bytes(reference_signal(3.0, 16000), 16000)
        steps = (
            ("voice_upload", VOICES_ROUTE, 201,
             lambda: http.post(VOICES_ROUTE, data={"name": name}, files={"file": ("ref.wav", reference, "audio/wav")})),
            ("voice_speech", SPEECH_ROUTE, 200, None),
            ("voice_delete", VOICE_ROUTE, 200, lambda: http.delete(f"{VOICES_ROUTE}/{name}")),
            ("voice_gone", VOICE_ROUTE, 404, lambda: http.get(f"{VOICES_ROUTE}/{name}")),
        )
        for kind, route, expected, call in steps:
            if call is None:
                self._speech(http, kind, self._body("pcm", voice=name), lambda response: response.read())
                if self.outcomes[-1].status != expected:
                    break
                continue
            started = time.monotonic()
            try:
                response = call()
            except httpx.HTTPError as exc:
                self._record(Outcome(kind, route, None, time.monotonic() - started,
                                     problem=f"lost: {type(exc).__name__}: {exc}"))
                return
            outcome = Outcome(kind, route, response.status_code, time.monotonic() - started)
            if response.status_code != expected:
                outcome.problem = f"status {response.status_code} (expected {expected}): {response.text[:200]}"
            self._record(outcome, response)
            if response.status_code != expected:
                return


# --- the run --------------------------------------------------------------------------------------

def wait_until_idle(url: str, timeout_s: float = 120) -> dict:
    """Metrics once no speech request is in flight and vLLM has nothing unfinished, read twice
    in a row (a response is counted by route and status just after its slot is released)."""
    deadline = time.monotonic() + timeout_s
    idle_before = False
    while True:
        metrics = read_metrics(url)
        idle = (metrics.get("chatterbox_speech_requests_in_flight") == 0
                and metrics.get("chatterbox_t3_requests_unfinished") == 0)
        if (idle and idle_before) or time.monotonic() > deadline:
            return metrics
        idle_before = idle
        time.sleep(0.5)


def run_soak(url: str, server_pid: int, *, clients: int, seconds: float, seed: int = 0, max_new_tokens: int = 20,
             chunk_max_new_tokens: int = 40, voice_cycles: int = 4, rss_interval_s: float = 2.0,
             warmup_fraction: float = 0.25, max_rss_growth_mib: float = 300.0) -> SoakReport:
    """Run the soak against a running server and judge it (see the module's docstring)."""
    settings = dict(clients=clients, seconds=seconds, seed=seed, max_new_tokens=max_new_tokens,
                    chunk_max_new_tokens=chunk_max_new_tokens, voice_cycles=voice_cycles, mix=MIX,
                    warmup_fraction=warmup_fraction, max_rss_growth_mib=max_rss_growth_mib, cpus=os.cpu_count())
    metrics_before = wait_until_idle(url)
    load_before = os.getloadavg()
    rss: list[tuple[float, int, int]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample_rss() -> None:
        while True:
            rss.append((time.monotonic() - started, *process_rss(server_pid)))
            if stop.wait(rss_interval_s):
                return

    sampler = threading.Thread(target=sample_rss, name="rss-sampler", daemon=True)
    sampler.start()
    budget, budget_lock = [voice_cycles], threading.Lock()
    workers = [Client(url, i, seed, max_new_tokens, chunk_max_new_tokens, budget, budget_lock)
               for i in range(clients)]
    threads = [threading.Thread(target=worker.run, args=(started + seconds,), name=f"soak-client-{i}")
               for i, worker in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    metrics_after = wait_until_idle(url)
    stop.set()
    sampler.join()
    rss.append((time.monotonic() - started, *process_rss(server_pid)))
    report = SoakReport(settings, [o for worker in workers for o in worker.outcomes], metrics_before, metrics_after,
                        rss, wall, load_before, os.getloadavg())
    judge(report)
    return report


def _delta(report: SoakReport, name: str) -> float:
    return report.metrics_after.get(name, 0.0) - report.metrics_before.get(name, 0.0)


def rss_growth(report: SoakReport) -> tuple[int, int, int]:
    """(total RSS at the end of the warm-up, at the end, the largest sample), server + engine, bytes."""
    totals = [(t, server + engine) for t, server, engine in report.rss]
    warm_end = report.settings["warmup_fraction"] * report.wall_s
    warm = next((total for t, total in totals if t >= warm_end), totals[-1][1])
    return warm, totals[-1][1], max(total for _, total in totals)


def judge(report: SoakReport) -> None:
    outcomes = report.outcomes
    verdict = report.verdict
    lost = [o for o in outcomes if o.problem and not o.garbled and (o.status is None or o.status < 500)]
    garbled = [o for o in outcomes if o.garbled]
    server_errors = [o for o in outcomes if o.status is not None and o.status >= 500]
    verdict["requests made"] = (len(outcomes) > 0, f"{len(outcomes)}")
    verdict["no lost responses"] = (not lost, f"{len(lost)}" + (f": {lost[0].problem}" if lost else ""))
    verdict["no garbled responses"] = (not garbled, f"{len(garbled)}" + (f": {garbled[0].problem}" if garbled else ""))
    verdict["no 5xx"] = (not server_errors, f"{len(server_errors)}"
                         + (f": {server_errors[0].problem}" if server_errors else ""))
    disconnects = sum(o.disconnected for o in outcomes)
    aborted = _delta(report, "chatterbox_speech_requests_aborted_total")
    verdict["aborted == disconnects"] = (aborted == disconnects, f"server aborted {aborted:g}, clients left "
                                                                 f"{disconnects}")
    rejected_server = _delta(report, "chatterbox_speech_requests_rejected_total")
    rejected_clients = sum(o.status == 429 for o in outcomes)
    verdict["429s counted"] = (rejected_server == rejected_clients,
                               f"server {rejected_server:g}, clients {rejected_clients}")
    in_flight = report.metrics_after.get("chatterbox_speech_requests_in_flight")
    unfinished = report.metrics_after.get("chatterbox_t3_requests_unfinished")
    verdict["nothing left running"] = (in_flight == 0 and unfinished == 0,
                                       f"in flight {in_flight}, unfinished in vLLM {unfinished}")
    routes = (SPEECH_ROUTE, VOICES_ROUTE, VOICE_ROUTE)
    server_counts = responses_by_route(report.metrics_after, routes)
    server_counts.subtract(responses_by_route(report.metrics_before, routes))
    server_counts = +server_counts
    client_counts = collections.Counter((o.route, o.status) for o in outcomes if o.status is not None)
    verdict["server counted every response"] = (
        server_counts == client_counts,
        "equal" if server_counts == client_counts else f"server {dict(server_counts)}, clients {dict(client_counts)}")
    warm, end, _ = rss_growth(report)
    growth_mib = (end - warm) / 2**20
    verdict["RSS growth after warm-up"] = (growth_mib <= report.settings["max_rss_growth_mib"],
                                           f"{growth_mib:+.0f} MiB (limit {report.settings['max_rss_growth_mib']:g})")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def format_report(report: SoakReport) -> str:
    lines = [f"soak: {report.settings['clients']} clients, {report.wall_s:.0f} s "
             f"(asked {report.settings['seconds']:g} s), seed {report.settings['seed']}, "
             f"max_new_tokens {report.settings['max_new_tokens']} (disconnecting streams: "
             f"{report.settings['chunk_max_new_tokens']} per chunk), {report.settings['cpus']} CPUs, "
             f"load average {report.load_before[0]:.1f} at the start, {report.load_after[0]:.1f} at the end",
             f"mix (relative weights): {report.settings['mix']}", ""]
    header = ("kind", "requests", "statuses", "decoded", "garbled", "lost", "left", "audio s", "p50 s", "p95 s")
    rows = []
    by_kind = collections.defaultdict(list)
    for o in report.outcomes:
        by_kind[o.kind].append(o)
    for kind in sorted(by_kind):
        items = by_kind[kind]
        statuses = collections.Counter("none" if o.status is None else str(o.status) for o in items)
        decoded = sum(o.status == 200 and not o.problem and not o.disconnected and o.route == SPEECH_ROUTE
                      for o in items)
        durations = [o.seconds for o in items if o.status is not None]
        rows.append((kind, str(len(items)), " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
                     str(decoded), str(sum(o.garbled for o in items)),
                     str(sum(bool(o.problem) and not o.garbled for o in items)),
                     str(sum(o.disconnected for o in items)), f"{sum(o.audio_seconds for o in items):.1f}",
                     f"{percentile(durations, 50):.2f}", f"{percentile(durations, 95):.2f}"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    total = len(report.outcomes)
    lines += ["", f"total: {total} requests, {total / report.wall_s:.2f} per second, "
                  f"{sum(o.audio_seconds for o in report.outcomes):.1f} s of audio", "",
              "memory (RSS, MiB): time s, server, engine processes, total"]
    picks = sorted({round(i * (len(report.rss) - 1) / 10) for i in range(11)})
    for i in picks:
        t, server, engine = report.rss[i]
        lines.append(f"  {t:7.1f}  {server / 2**20:8.0f}  {engine / 2**20:8.0f}  {(server + engine) / 2**20:8.0f}")
    warm, end, peak = rss_growth(report)
    lines += [f"  after warm-up {warm / 2**20:.0f}, at the end {end / 2**20:.0f}, peak {peak / 2**20:.0f}", "",
              "verdict:"]
    for name, (ok, detail) in report.verdict.items():
        lines.append(f"  {'ok  ' if ok else 'FAIL'}  {name}: {detail}")
    problems = [o.problem for o in report.outcomes if o.problem]
    if problems:
        lines.append("problems (first 10):")
        lines += [f"  {problem}" for problem in problems[:10]]
    lines.append(f"VERDICT: {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)


def report_json(report: SoakReport) -> dict:
    warm, end, peak = rss_growth(report)
    return {"settings": report.settings, "wall_s": report.wall_s, "load": [report.load_before, report.load_after],
            "outcomes": [o.__dict__ for o in report.outcomes], "rss": report.rss,
            "rss_warm_end_peak": [warm, end, peak], "verdict": report.verdict, "passed": report.passed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--model", type=Path, help="model directory (default: the tiny demo model, made now)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=20, help="speech tokens per normal request")
    parser.add_argument("--voice-cycles", type=int, default=8, help="voice upload/use/delete cycles in all")
    parser.add_argument("--max-queue", type=int, default=None, help="the server's --max-queue (default: 2 x clients)")
    parser.add_argument("--max-rss-growth-mib", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="write every outcome and sample here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    chunk_max_new_tokens = 40
    with tempfile.TemporaryDirectory(prefix="soak-") as work:
        work = Path(work)
        model = args.model
        if model is None:
            from vllm_chatterbox.demo_model import make_test_model

            model = make_test_model(work / "model", "tiny", seed=0)
        server = ServerProcess(model, work / "voices", work, max_queue=args.max_queue or 2 * args.clients,
                               max_new_tokens=chunk_max_new_tokens, max_num_seqs=max(16, args.clients),
                               kv_cache_gib=0.5)
        logger.info("starting the server on %s", model)
        server.start()
        try:
            logger.info("server ready on %s (pid %d); %d clients for %.1f min", server.url, server.process.pid,
                        args.clients, args.minutes)
            report = run_soak(server.url, server.process.pid, clients=args.clients, seconds=60 * args.minutes,
                              seed=args.seed, max_new_tokens=args.max_new_tokens,
                              chunk_max_new_tokens=chunk_max_new_tokens, voice_cycles=args.voice_cycles,
                              max_rss_growth_mib=args.max_rss_growth_mib)
        finally:
            server.stop()
        print(format_report(report))
        if args.json:
            args.json.write_text(json.dumps(report_json(report), indent=1))
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
