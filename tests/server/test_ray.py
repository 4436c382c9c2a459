"""``serve --ray``: the server as a Ray Serve application on a real local Ray cluster.

COST: this file starts its own Ray (head on loopback, ``num_cpus=2``) and the application
autoscaled from one replica, with its own engine on the tiny model (plus the session's
single-process server for the byte comparison); under load Ray adds a second replica (a second
engine), which then stay as a fixed two for the tests that need two, waits for Ray to replace a
killed replica (a third engine), and finally autoscales again, back to one replica when idle.
Ray's processes are stopped at the end of the module. Each engine start is 30-40 s of CPU: the
upscale is what gives the tests their two replicas, rather than two more started for them.

The app is built through ``vllm_chatterbox.cli.ray_application``, the builder a Ray Serve config
file names (deploy/ray-serve.yaml), with the session server's options.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.server.helpers import (API_KEY, AUTH, MAX_NEW_TOKENS, MAX_QUEUE, MAX_VOICE_MB, MAX_VOICE_SECONDS,
                                  assert_same_audio_up_to_rounding, free_port, pcm_samples, speech)

ray = pytest.importorskip("ray", reason="Ray Serve is the 'ray' extra (installed by scripts/setup.sh)")
from ray import serve  # noqa: E402

from vllm_chatterbox.cli import ray_application  # noqa: E402
from vllm_chatterbox.server.ray_serve import APP_NAME, DEPLOYMENT_NAME, REPLICA_HEADER  # noqa: E402

# In a parallel run the Ray cluster's tests (the longest module) run together on one worker, apart
# from the session server's folder: their one test against that server starts it once more there.
pytestmark = pytest.mark.xdist_group("ray")

READY_TIMEOUT_S = 600  # two engines loading at once on a loaded 2-core machine
REPLACE_TIMEOUT_S = 600
LONG_TEXT = " ".join(["The bridge opens at dawn and closes at dusk, every day of the year."] * 6)
# Ray Serve gives an application deployed from Python a new random code version on every
# ``serve.run``, which replaces every replica (a fresh engine each). With a fixed version a change of
# scaling options alone updates the running replicas in place: the upscaled replicas are kept as a
# fixed two, and autoscaled again at the end. ``version`` is an internal option of
# ``Deployment.options`` (Ray pinned to 2.60 by the 'ray' extra).
CODE_VERSION = "chatterbox-test"
# Autoscaling on the requests ongoing per replica (target 1), with quicker decisions than the
# defaults, so the tests are short.
AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
               "upscale_delay_s": 1, "downscale_delay_s": 5, "look_back_period_s": 2}


def with_code_version(deployment):
    versioned = deployment.options(version=CODE_VERSION, _internal=True)
    return versioned.bind(*versioned.init_args)


def autoscaled(ray_options: dict, **initial):
    """The application autoscaled between 1 and 2 replicas; ``initial_replicas=N`` sets the count
    it starts at (in place too: Ray then stops or starts replicas), without it a running
    application keeps its count until the autoscaler decides."""
    # The builder's own autoscaling arguments, then Ray's config with the quicker delays.
    scaling = {name: AUTOSCALING[name] for name in ("min_replicas", "max_replicas", "target_ongoing_requests")}
    app = ray_application({**ray_options, **scaling})
    config = {**AUTOSCALING, **initial}
    return with_code_version(app._bound_deployment.options(autoscaling_config=config))


@pytest.fixture(scope="module")
def ray_options(model_dir, tmp_path_factory) -> dict:
    """``ray_application``'s args: the session server's options and thread counts (every core), so
    seeded audio matches."""
    return {
        "model": str(model_dir), "api_key": API_KEY, "voices_dir": str(tmp_path_factory.mktemp("ray-voices")),
        "max_queue": MAX_QUEUE, "max_new_tokens": MAX_NEW_TOKENS, "max_voice_mb": MAX_VOICE_MB,
        "max_voice_seconds": MAX_VOICE_SECONDS, "max_num_seqs": 16, "max_model_len": 1024, "kv_cache_gib": 0.25,
        "t3_threads": 2, "s3gen_threads": 2, "replica_cpus": 1,
    }


@pytest.fixture(scope="module")
def ray_server(ray_options):
    """The application autoscaled from one replica behind Ray Serve's proxy on a free loopback
    port; yields the base URL."""
    # A loaded machine can start Ray's per-node agent slower than the raylet's default wait (15 s);
    # the handles (the proxy's) report the requests ongoing to the autoscaler every second, not
    # every 10 s (Ray's processes inherit both).
    settings = {"RAY_agent_register_timeout_ms": "300000", "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", _temp_dir=temp_dir, include_dashboard=False,
             log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        started = time.monotonic()
        serve.run(autoscaled(ray_options, initial_replicas=1), name=APP_NAME, route_prefix="/")
        assert time.monotonic() - started < READY_TIMEOUT_S
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def running_replicas() -> int:
    states = serve.status().applications[APP_NAME].deployments[DEPLOYMENT_NAME].replica_states
    return states.get("RUNNING", 0)


def wait_for_replicas(count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while running_replicas() != count:
        assert time.monotonic() < deadline, f"not {count} running replicas after {timeout} s: {serve.status()}"
        time.sleep(1)


class HeldSpeechRequest(threading.Thread):
    """A speech request whose client sends the start of its JSON body at once and the rest only
    once ``release`` is set: until then it is an ongoing request on its replica (what Ray's
    autoscaler counts) that costs no CPU, so the replica Ray adds for it starts on an idle machine."""

    def __init__(self, url: str, release: threading.Event, text: str):
        super().__init__(daemon=True)
        self.url, self.release = url, release
        self.body = json.dumps({"model": "chatterbox", "input": text, "response_format": "pcm"}).encode()
        self.response: httpx.Response | None = None
        self.error: Exception | None = None

    def _content(self) -> Iterator[bytes]:
        yield self.body[:10]
        self.release.wait()
        yield self.body[10:]

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, headers=AUTH, timeout=300) as client:
                self.response = client.post("/v1/audio/speech", content=self._content(),
                                            headers={"Content-Type": "application/json"})
        except Exception as exc:  # noqa: BLE001 - the test reports it
            self.error = exc


@dataclass
class Upscale:
    """What the load that made Ray add the second replica saw."""

    held: list[HeldSpeechRequest]
    answered: set[str]  # the replicas that answered the load
    failures: list[str]


@pytest.fixture(scope="module")
def upscaled(ray_server, ray_options) -> Upscale:
    """Ray adds a second replica under load (``test_autoscaling_...`` checks what the load saw):
    three requests held open by their clients; once the second replica runs they are let go and
    three clients send requests back to back until both replicas have answered. The two replicas
    then stay, a fixed count set in place, for the tests that need two."""
    wait_for_replicas(1, 120)
    release = threading.Event()
    held = [HeldSpeechRequest(ray_server, release, f"Held request {i}.") for i in range(3)]
    stop = threading.Event()
    answered: set[str] = set()
    failures: list[str] = []

    def load() -> None:  # back-to-back requests beside the three let go: more ongoing than the target
        with httpx.Client(base_url=ray_server, headers=AUTH, timeout=300) as client:
            while not stop.is_set():
                response = speech(client, "Under load.", response_format="pcm")
                if response.status_code == 200:
                    answered.add(response.headers[REPLICA_HEADER])
                else:
                    failures.append(f"{response.status_code} {response.text}")

    clients = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for request in held:
        request.start()
    try:
        wait_for_replicas(2, REPLACE_TIMEOUT_S)
        release.set()
        for client in clients:
            client.start()
        deadline = time.monotonic() + 120
        while len(answered) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        # Still under load, before the autoscaler could scale down: both replicas stay.
        app = ray_application({**ray_options, "replicas": 2})
        serve.run(with_code_version(app._bound_deployment), name=APP_NAME, route_prefix="/")
    finally:
        release.set()
        stop.set()
        for thread in (*held, *clients):
            if thread.ident is not None:  # started
                thread.join(timeout=300)
    assert running_replicas() == 2
    return Upscale(held, answered, failures)


@pytest.fixture
def http(upscaled, ray_server):
    with httpx.Client(base_url=ray_server, headers=AUTH, timeout=300) as client:
        yield client


def replicas_seen(http: httpx.Client, tries: int = 30) -> set[str]:
    seen = set()
    for _ in range(tries):
        response = http.get("/v1/models")
        assert response.status_code == 200, response.text
        seen.add(response.headers[REPLICA_HEADER])
        if len(seen) == 2:
            break
    return seen


def replica_actor(replica: str):
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == "serve" and a["name"].endswith(f"#{replica}")]
    assert len(names) == 1, names
    return ray.get_actor(names[0], namespace="serve")


def test_two_replicas_serve_and_export_their_metrics(http):
    seen = replicas_seen(http)
    assert len(seen) == 2, seen
    health = http.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    metrics = http.get("/metrics")
    replica = metrics.headers[REPLICA_HEADER]
    samples = [line for line in metrics.text.splitlines() if line.startswith("chatterbox_engine_ready")]
    assert samples == [f'chatterbox_engine_ready{{replica="{replica}"}} 1.0'], samples

    # Every replica's metrics, from the node's Ray metrics agent (where Prometheus scrapes Ray's own).
    (node,) = ray.nodes()
    exported = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
    deadline = time.monotonic() + 90
    while True:
        ready = {line.split('replica="')[1].split('"')[0] for line in httpx.get(exported, timeout=30).text.splitlines()
                 if line.startswith("ray_chatterbox_engine_ready{") and line.endswith(" 1.0")}
        if ready >= seen or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert ready >= seen, (ready, seen)


def test_seeded_speech_equals_the_single_process_server(http, server):
    fields = {"response_format": "pcm", "seed": 11}
    through_ray = speech(http, "Two servers, one voice.", **fields)
    with server.client() as direct:
        alone = speech(direct, "Two servers, one voice.", **fields)
    assert through_ray.status_code == alone.status_code == 200, (through_ray.text, alone.text)
    assert len(through_ray.content) > 0
    assert_same_audio_up_to_rounding(pcm_samples(through_ray.content), pcm_samples(alone.content))


def test_a_voice_made_through_one_replica_is_used_and_deleted_through_the_other(http, reference_audio):
    created = http.post("/v1/audio/voices", data={"name": "ray-shared", "exaggeration": "0.6"},
                        files={"file": ("ref.wav", reference_audio, "audio/wav")})
    assert created.status_code == 201, created.text
    maker = created.headers[REPLICA_HEADER]
    used_by = set()
    for _ in range(30):
        response = speech(http, "Spoken by the shared voice.", voice="ray-shared", response_format="pcm", seed=3)
        assert response.status_code == 200, response.text
        used_by.add(response.headers[REPLICA_HEADER])
        if used_by - {maker}:
            break
    assert used_by - {maker}, f"every request went to {maker}"

    deleted = http.delete("/v1/audio/voices/ray-shared")
    assert deleted.status_code == 200, deleted.text
    refused_by = set()
    for _ in range(30):
        response = speech(http, "Gone.", voice="ray-shared", response_format="pcm")
        assert response.status_code == 400, response.text  # an unknown voice, as OpenAI answers
        refused_by.add(response.headers[REPLICA_HEADER])
        if len(refused_by) == 2:
            break
    assert len(refused_by) == 2, refused_by


def test_a_killed_replica_fails_its_client_cleanly_and_is_replaced(http, ray_server):
    before = replicas_seen(http)
    assert len(before) == 2
    body = {"model": "chatterbox", "input": LONG_TEXT, "response_format": "pcm", "seed": 5}
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):  # the stream breaks off: an error, never a short "success"
        with http.stream("POST", "/v1/audio/speech", json=body) as response:
            assert response.status_code == 200
            victim = response.headers[REPLICA_HEADER]
            chunks = response.iter_bytes()
            next(chunks)  # the first audio has arrived: the request is mid-way
            ray.kill(replica_actor(victim), no_restart=True)
            for _ in chunks:
                pass
    assert time.monotonic() - started < 120
    survivor = (before - {victim}).pop()

    # The other replica keeps serving while Ray starts a replacement.
    for _ in range(4):
        response = speech(http, "Still here.", response_format="pcm", seed=2)
        assert response.status_code == 200, response.text
        assert response.headers[REPLICA_HEADER] != victim

    deadline = time.monotonic() + REPLACE_TIMEOUT_S
    while time.monotonic() < deadline:
        seen = replicas_seen(http, tries=10)
        if seen - {survivor, victim}:
            break
        time.sleep(2)
    else:
        pytest.fail(f"Ray did not replace replica {victim} within {REPLACE_TIMEOUT_S} s")
    assert victim not in replicas_seen(http)


def test_autoscaling_from_one_replica_to_two_under_load_and_back(upscaled, ray_options):
    """Autoscaled between 1 and 2 replicas on the requests ongoing per replica: the module's
    application started at one replica and Ray added the second under load (``upscaled``: every
    request of that load was served, by both replicas). Autoscaled again in place (keeping its
    two replicas: no ``initial_replicas``), it goes back to one when idle. Last in the module: the
    tests before it need two replicas."""
    for request in upscaled.held:
        assert request.error is None and request.response is not None, request.error
        assert request.response.status_code == 200, request.response.text
        upscaled.answered.add(request.response.headers[REPLICA_HEADER])
    assert not upscaled.failures, upscaled.failures[:3]
    assert len(upscaled.answered) == 2, f"only {upscaled.answered} answered under load"

    serve.run(autoscaled(ray_options), name=APP_NAME, route_prefix="/")
    assert running_replicas() == 2  # the switch itself stopped none
    wait_for_replicas(1, 120)  # idle: back to one replica
