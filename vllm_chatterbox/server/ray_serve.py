"""The same server as a Ray Serve application: many replicas behind Ray's HTTP proxy, each running
the app of :func:`vllm_chatterbox.server.app.create_app` with its own model (T3 engine + S3Gen).

Only ``vllm-chatterbox serve --ray`` and Ray Serve config files import this module (the plain
server never needs Ray). What Ray Serve adds to each replica's app:

- readiness: the app's start-up (its ASGI lifespan) returns only once the engine has loaded, so Ray
  marks a replica ready, and routes to it, only then; a load failure fails the replica's start and
  Ray retries it. Afterwards Ray's periodic health check calls :meth:`ChatterboxReplica.check_health`,
  which fails when the engine has died, and Ray replaces the replica.
- ``X-Chatterbox-Replica``: every response names the replica that made it.
- metrics: ``/metrics`` labels every sample with ``replica`` (a scrape through the proxy reaches one
  replica), and each replica copies its samples into Ray's metrics, which every node's Ray metrics
  agent exports for Prometheus as ``ray_chatterbox_*{replica=...}``, beside Ray Serve's own.
- admission: Ray sends a replica at most ``max_ongoing_requests`` (= ``--max-queue``, the replica's
  own bound) and queues at most ``max_queued_requests`` more per proxy, beyond which the proxy answers
  429 with Retry-After, as the single server does.

Voices are shared through the voice store's directory (:mod:`vllm_chatterbox.server.voices`):
every replica reads it on each look-up, so it must be a filesystem every replica mounts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client.metrics_core import Metric
from ray import serve

from vllm_chatterbox.server.app import create_app
from vllm_chatterbox.server.settings import ServerSettings
from vllm_chatterbox.server.state import BackendLoader, ServerState

logger = logging.getLogger(__name__)

REPLICA_HEADER = "X-Chatterbox-Replica"
DEPLOYMENT_NAME = "Chatterbox"
APP_NAME = "chatterbox"
_READY_POLL_S = 0.2
_MIRROR_PERIOD_S = 5.0


@dataclass(frozen=True)
class RayScaling:
    """How many replicas, what each one reserves, and how much Ray's proxy may queue.

    ``replicas`` is a fixed count; ``min_replicas``/``max_replicas`` (both set) autoscale on the
    requests ongoing per replica (``target_ongoing_requests``). ``max_queued_requests`` bounds the
    requests each proxy holds for this deployment once every replica has ``max_ongoing_requests``;
    beyond it the proxy answers 429 with ``Retry-After: retry_after_s``.
    """

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_queued_requests: int = 64
    retry_after_s: int = 5

    def __post_init__(self) -> None:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("give both --min-replicas and --max-replicas to autoscale, or --replicas N")
        if self.min_replicas is not None and not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas} and "
                             f"{self.max_replicas}")
        if self.max_replicas is not None and self.max_replicas < 1:
            raise ValueError(f"max_replicas must be at least 1, got {self.max_replicas}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("replica CPUs and GPUs must not be negative")
        if self.max_queued_requests < 1:
            raise ValueError(f"max_queued_requests must be at least 1, got {self.max_queued_requests}")

    def deployment_options(self, max_ongoing_requests: int) -> dict:
        """Keyword arguments of ``Deployment.options`` (the names of Ray's config file)."""
        options = {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 429, "retry_after_s": self.retry_after_s},
            # The engine's own death is seen by check_health; a replica that stops answering it for
            # a minute (a wedged engine thread) is replaced too.
            "health_check_period_s": 5.0,
            "health_check_timeout_s": 60.0,
        }
        if self.min_replicas is None:
            options["num_replicas"] = self.replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": max(1, self.min_replicas),
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": 5.0, "downscale_delay_s": 60.0,
            }
        return options


class ReplicaLabelledMetrics:
    """A view of a Prometheus registry whose samples all carry ``replica="<id>"``: ``/metrics``
    serves it in place of the server's registry (``generate_latest`` only calls ``collect``)."""

    def __init__(self, registry, replica: str):
        self.registry = registry
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [sample._replace(labels={**sample.labels, "replica": self.replica})
                                for sample in family.samples]
            yield labelled


class _ReplicaHeaderMiddleware:
    def __init__(self, app, replica: str):
        self.app = app
        self.header = (REPLICA_HEADER.lower().encode(), replica.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


async def mirror_to_ray_metrics(registry, replica: str) -> None:
    """Copy this replica's metric samples into Ray's metrics every few seconds, as gauges tagged with
    the replica: every node's Ray metrics agent exports them (``ray_chatterbox_*``) beside Ray
    Serve's own, so one Prometheus scrape of the cluster's nodes sees every replica."""
    from ray.util.metrics import Gauge

    gauges: dict[str, Gauge] = {}
    while True:
        for family in registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                gauge = gauges.get(sample.name)
                if gauge is None:
                    gauge = gauges[sample.name] = Gauge(sample.name, family.documentation,
                                                        tag_keys=("replica", *sample.labels))
                gauge.set(sample.value, tags={"replica": replica, **sample.labels})
        await asyncio.sleep(_MIRROR_PERIOD_S)


def _lifespan_until_ready(app: FastAPI, state: ServerState, replica: str) -> None:
    """Make the app's start-up wait for the engine (Ray routes to a replica once it has started),
    then mirror the metrics into Ray's until the replica stops."""
    start = app.router.lifespan_context
    registry = state.metrics.registry

    @asynccontextmanager
    async def lifespan(app_):
        async with start(app_) as value:
            while state.backend is None:
                if state.load_error is not None:
                    raise RuntimeError(f"the engine failed to load: {state.load_error}")
                await asyncio.sleep(_READY_POLL_S)
            mirror = asyncio.create_task(mirror_to_ray_metrics(registry, replica))
            try:
                yield value
            finally:
                mirror.cancel()

    app.router.lifespan_context = lifespan


def replica_app(settings: ServerSettings, load_backend: BackendLoader, replica: str) -> FastAPI:
    """The server's app as one replica runs it (see the module's docstring)."""
    app = create_app(settings, load_backend)
    state: ServerState = app.state.chatterbox
    _lifespan_until_ready(app, state, replica)
    state.metrics.registry = ReplicaLabelledMetrics(state.metrics.registry, replica)
    app.add_middleware(_ReplicaHeaderMiddleware, replica=replica)
    return app


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class ChatterboxReplica:
    """One replica: the server's app with its own engine (built at the replica's start)."""

    def __init__(self, settings: ServerSettings, load_backend: BackendLoader):
        self.settings = settings
        self.load_backend = load_backend
        self.state: ServerState | None = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        replica = serve.get_replica_context().replica_id.unique_id
        app = replica_app(self.settings, self.load_backend, replica)
        self.state = app.state.chatterbox
        logger.info("replica %s: loading the engine", replica)
        return app

    async def check_health(self) -> None:
        """Ray's health check: fails once the engine has died (Ray then replaces this replica)."""
        state = self.state
        if state is None or state.backend is None:
            raise RuntimeError("the engine is not loaded")
        if state.backend.engine_dead:
            raise RuntimeError("the engine has died")


def application(settings: ServerSettings, load_backend: BackendLoader, scaling: RayScaling):
    """The bound Ray Serve application (what ``serve.run`` takes and a config file's builder returns)."""
    deployment = ChatterboxReplica.options(**scaling.deployment_options(settings.max_queue))
    return deployment.bind(settings, load_backend)


def run_on_ray(settings: ServerSettings, load_backend: BackendLoader, scaling: RayScaling, *, host: str,
               port: int, address: str | None) -> None:
    """Serve on Ray until stopped: connects to ``address`` (or ``$RAY_ADDRESS``), else starts a local
    Ray; the proxy listens on host:port. Ctrl-C removes the application (and stops a local Ray)."""
    import ray

    # A local Ray's node agent can take longer than the raylet's 15 s wait on a busy machine (seen on
    # a loaded 2-core VM); a cluster's nodes keep their own setting.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=True)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application(settings, load_backend, scaling), name=APP_NAME, route_prefix="/", blocking=False)
        logger.info("serving on http://%s:%d through Ray Serve (%s)", host, port, _describe(scaling))
        _wait_until_stopped()
    finally:
        try:
            serve.delete(APP_NAME)
        finally:
            ray.shutdown()


def _describe(scaling: RayScaling) -> str:
    if scaling.min_replicas is None:
        count = f"{scaling.replicas} replica(s)"
    else:
        count = f"{scaling.min_replicas}-{scaling.max_replicas} replicas, autoscaled"
    return f"{count}, {scaling.num_cpus:g} CPU and {scaling.num_gpus:g} GPU each"


def _wait_until_stopped() -> None:
    """Until Ctrl-C or SIGTERM (which then removes the application like Ctrl-C)."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        logger.info("stopping")
