"""Running T3 on vLLM: the model directory vLLM sees, engine start-up, requests in, tokens out.

One engine for both T3 architectures: what differs (vLLM's model directory, logits processors,
sampling parameters) comes from the architecture's :class:`~vllm_chatterbox.t3.contract.T3EngineSpec`.
One background thread runs an event loop that owns vLLM's ``AsyncLLM``; callers in any thread
(or any event loop) submit requests and wait only on their own outputs. A request whose caller
stops waiting (error, cancel, closed stream) is aborted in vLLM; a dead engine fails every
waiting request at once with :class:`T3EngineDeadError`.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import contextlib
import hashlib
import itertools
import queue
import threading
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import torch

from vllm_chatterbox.config import cache_root, check_cpu_sharing, check_t3_dtype
from vllm_chatterbox.t3.contract import T3EngineSpec, T3Request, T3Result
from vllm_chatterbox.t3.cpu_turns import EngineHold, default_cpu_sharing
from vllm_chatterbox.t3.quiet import is_quiet, quiet_engine_environment, quiet_vllm_imports, vllm_log_level
from vllm_chatterbox.t3.threads import (available_cores, default_engine_threads, engine_process_environment,
                                        scoped_environment)

logger = logging.getLogger(__name__)

# vLLM's CPU attention needs KV blocks in multiples of 32 tokens.
DEFAULT_BLOCK_SIZE = 32
# On the CPU backend vLLM otherwise reserves a fraction of the whole machine's memory.
DEFAULT_CPU_KV_CACHE_BYTES = 2 << 30




def write_vllm_model_dir(t3_weights: Path, hf_config: dict, kind: str, link_name: str) -> Path:
    """``cache_root()/kind/<hash>``: ``config.json`` (``hf_config``) and a link ``link_name`` to
    the T3 weights, reused while the weights file and the configuration stay the same.

    vLLM reads every ``*.safetensors`` in its model directory; the official layout keeps the
    S3Gen and voice-encoder weights beside T3, so vLLM gets a directory of its own.
    """
    t3_weights = t3_weights.resolve()
    stat = t3_weights.stat()
    key = hashlib.sha256(
        json.dumps([str(t3_weights), stat.st_size, stat.st_mtime_ns, hf_config], sort_keys=True).encode()
    ).hexdigest()[:16]
    directory = cache_root() / kind / key
    if not (directory / "config.json").exists():
        directory.mkdir(parents=True, exist_ok=True)
        link = directory / link_name
        if not link.exists():
            link.symlink_to(t3_weights)
        tmp = directory / f"config.json.{os.getpid()}"
        tmp.write_text(json.dumps(hf_config, indent=1))
        tmp.replace(directory / "config.json")
    return directory


def _is_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


MAIN_GUARD_MESSAGE = (
    "the T3 engine was started at the top level of a script without `if __name__ == \"__main__\":`; "
    "vLLM starts its engine in a new process that re-runs the script, so put the code that builds the "
    "model under `if __name__ == \"__main__\":`")


def _in_spawned_reimport_of_main() -> bool:
    """True in a spawned child while it re-runs the parent's script (as ``__mp_main__``)."""
    main = sys.modules.get("__main__")
    return multiprocessing.parent_process() is not None and getattr(main, "__name__", None) == "__mp_main__"


def _started_outside_main_guard() -> bool:
    """True when the script being run calls us from its top level outside an
    ``if __name__ == "__main__":`` block (read from the script's source)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame, line = sys._getframe(1), None
    while frame is not None:
        if frame.f_globals is getattr(main, "__dict__", None) and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    if line is None or path is None:
        return False
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    return not any(_is_main_guard(node) and node.lineno <= line <= node.end_lineno for node in tree.body)


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    names = [node.test.left, *node.test.comparators]
    return (any(isinstance(n, ast.Name) and n.id == "__name__" for n in names)
            and any(isinstance(n, ast.Constant) and n.value == "__main__" for n in names))


class T3EngineDeadError(RuntimeError):
    """vLLM's engine process is gone; every waiting request fails with this, and so does every
    later one (start a new ChatterboxTTS)."""


class T3RequestStoppedError(RuntimeError):
    """vLLM's engine ended a request before its end by itself (finish reason ``abort``: the engine
    is shutting down, e.g. it got a signal; ``error``: an internal failure). Its tokens are
    incomplete: returning them as a finished request would pass cut speech off as whole."""


# Finish reasons of a request vLLM stopped on its own (the client's own aborts cancel the request's
# task and deliver nothing).
_STOPPED_BY_ENGINE = ("abort", "error")


# Events delivered to a request's sink, from the engine thread: ("tokens", new ids), then
# ("done", T3Result) or ("error", exception).
Event = tuple[str, object]
Sink = Callable[[Event], None]


class T3Engine:
    """A vLLM engine serving one T3 architecture (``spec``); thread-safe.

    ``extra_logits_processors`` (tests) run before the architecture's own processors and see the
    model's raw logits; ``after_sampler_processors`` run after them and see the processed logits.
    On a CPU, ``threads`` are the engine process's compute threads and ``cpu_sharing`` whether
    the engine holds its steps while this process's S3Gen computes (``t3/cpu_turns.py``; None:
    alternate when the engine's threads plus this process's torch threads exceed the cores);
    :attr:`cpu_hold` is the caller's side of it (None off the CPU).
    """

    def __init__(self, spec: T3EngineSpec, t3_weights: Path, *, dtype: str = "float32",
                 extra_logits_processors: Iterable[str] = (), after_sampler_processors: Iterable[str] = (),
                 threads: int | None = None, cpu_sharing: str | None = None,
                 **engine_options):
        if _in_spawned_reimport_of_main():
            raise RuntimeError(MAIN_GUARD_MESSAGE)
        check_cpu_sharing(cpu_sharing)
        self.spec = spec
        self.cfg = spec.cfg
        self.dtype = check_t3_dtype(dtype)
        self.torch_dtype: torch.dtype = getattr(torch, self.dtype)
        model_dir = spec.vllm_model_dir(Path(t3_weights))
        options = {
            "dtype": self.dtype,
            "skip_tokenizer_init": True,
            "enable_prompt_embeds": True,
            "enable_prefix_caching": True,
            "block_size": DEFAULT_BLOCK_SIZE,
            "max_model_len": spec.default_max_model_len(),
            "seed": 0,
        }
        options["log_level"] = vllm_log_level(engine_options)
        quiet = is_quiet(options["log_level"])
        options["use_tqdm_on_load"] = not quiet  # vLLM's checkpoint loading bars
        with quiet_vllm_imports(quiet):
            on_cpu = _is_cpu_platform()
            import vllm.engine.arg_utils  # noqa: F401 - the import that logs vLLM's Triton notice
        if on_cpu and _started_outside_main_guard():
            # vLLM's CPU platform always spawns its engine process, which would re-run the script
            # and fail there: say so now, without starting it.
            raise RuntimeError(MAIN_GUARD_MESSAGE)
        if on_cpu:
            if "gpu_memory_utilization" not in engine_options:
                options["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_BYTES
            # The T3 model is not torch.compile'd, so eager mode changes nothing at run time on
            # CPU; it skips vLLM's compile warm-up, a dummy forward over max_num_batched_tokens
            # rows (two minutes for the full model on two cores).
            options["enforce_eager"] = True
            # vLLM 0.32 rewinds a seeded request's generator after sampling for a partly
            # prefilled prompt, which CPU generators cannot do: the engine dies. Whole-prompt
            # prefills never need the rewind.
            options["enable_chunked_prefill"] = False
            # The model runs in the engine-core process itself (see t3/threads.py for its threads).
            # vLLM's CPU default adds a worker process and reserves a core for the engine core,
            # which busy-waits on that worker: at one request, one core computes and one spins.
            options["distributed_executor_backend"] = "uni"
        options.setdefault("disable_log_stats", True)
        options.update(engine_options)
        options["logits_processors"] = [*extra_logits_processors, *spec.logits_processors, *after_sampler_processors]
        logger.info("starting vLLM for T3 (%s)", model_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="t3-engine", daemon=True)
        self._thread.start()
        self._request_ids = itertools.count()
        self.requests_submitted = 0
        self._closed = False
        self.threads = (threads or default_engine_threads()) if on_cpu else None
        self.cpu_hold: EngineHold | None = None
        if on_cpu:
            mode = cpu_sharing or default_cpu_sharing(self.threads, torch.get_num_threads(), available_cores())
            self.cpu_hold = EngineHold(alternate=mode == "alternate", t3_batch=self.unfinished_requests)
        try:
            with engine_process_environment(self.threads) if on_cpu else contextlib.nullcontext(), \
                    scoped_environment(self.cpu_hold.environment()) if on_cpu else contextlib.nullcontext(), \
                    quiet_engine_environment(quiet):
                self.engine = self._run_in_loop(self._start(str(model_dir), options))
        except BaseException as exc:
            self._stop_loop()
            if self.cpu_hold is not None:
                self.cpu_hold.close()
            if isinstance(exc, Exception) and _started_outside_main_guard():
                raise RuntimeError(MAIN_GUARD_MESSAGE) from exc
            raise
        if self.cpu_hold is not None:
            self.cpu_hold.unlink()  # the engine has mapped it
        self.vllm_config = self.engine.vllm_config
        self.max_model_len: int = self.engine.model_config.max_model_len
        self._seeds_crash_vllm = on_cpu and bool(self.vllm_config.scheduler_config.enable_chunked_prefill)

    @staticmethod
    async def _start(model_dir: str, options: dict):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.executor import Executor
        from vllm.v1.executor.uniproc_executor import UniProcExecutor

        args = AsyncEngineArgs(model=model_dir, **options)
        vllm_config = args.create_engine_config()
        if options.get("distributed_executor_backend") == "uni":
            # vLLM's CPU platform turns "uni" into "mp" (for its own OpenMP binding, which
            # t3/threads.py replaces); asked for explicitly, it stays.
            vllm_config.parallel_config.distributed_executor_backend = "uni"
        executor = UniProcExecutor if vllm_config.parallel_config.distributed_executor_backend == "uni" \
            else Executor.get_class(vllm_config)
        return AsyncLLM(vllm_config=vllm_config, executor_class=executor, log_stats=not args.disable_log_stats,
                        log_requests=args.enable_log_requests)

    def _run_in_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # --- requests -----------------------------------------------------------------------------

    def sampling_params(self, request: T3Request, extra_args: dict | None = None, **overrides):
        """vLLM's sampling parameters for one request: the architecture's (``spec``), the token
        budget and seed, ``extra_args`` merged into the architecture's, then ``overrides``."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = request.params
        params = self.spec.sampling_params(p)
        params.update({
            "max_tokens": p.max_new_tokens,
            "seed": p.seed,
            "detokenize": False,
            "output_kind": RequestOutputKind.DELTA,
            "extra_args": {**params.get("extra_args", {}), **(extra_args or {})},
        })
        params.update(overrides)
        return SamplingParams(**params)

    def check(self, request: T3Request) -> None:
        """Everything vLLM would refuse (or die of), as a ValueError before anything is sent."""
        if self._closed:
            raise RuntimeError("the T3 engine is shut down")
        if self.engine.errored:
            raise T3EngineDeadError("the T3 engine (vLLM engine core) has died; start a new ChatterboxTTS")
        prompt_len = request.prompt_embeds.shape[0]
        if prompt_len + request.params.max_new_tokens > self.max_model_len:
            raise ValueError(
                f"prompt of {prompt_len} rows + max_new_tokens {request.params.max_new_tokens} exceeds the "
                f"engine's max_model_len {self.max_model_len}"
            )
        if self._seeds_crash_vllm and request.params.seed is not None and request.params.temperature > 0:
            raise ValueError(
                "seed: seeded sampling with chunked prefill on vLLM's CPU backend would crash the engine "
                "(vLLM 0.32 cannot rewind CPU generators); start the engine without enable_chunked_prefill=True "
                "(the CPU default) or leave seed unset"
            )

    def submit(self, request: T3Request, sink: Sink, extra_args: dict | None = None,
               **sampling_overrides) -> concurrent.futures.Future:
        """Start one request; its events go to ``sink`` (called on the engine thread, so it must
        be quick and thread-safe). Cancelling the returned future aborts the request in vLLM."""
        self.check(request)
        params = self.sampling_params(request, extra_args, **sampling_overrides)
        request_id = f"t3-{next(self._request_ids)}"
        self.requests_submitted += 1
        # Prompt rows are built in fp32; vLLM's model runner would round them to the model dtype
        # anyway, rounding here halves what travels to the engine process in bf16.
        prompt = {"prompt_embeds": request.prompt_embeds.to(self.torch_dtype), "cache_salt": request.cache_salt}
        return asyncio.run_coroutine_threadsafe(self._pump(request_id, prompt, params, sink), self._loop)

    async def _pump(self, request_id: str, prompt: dict, params, sink: Sink) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        result = T3Result()
        try:
            async for out in self.engine.generate(prompt, params, request_id):
                completion = out.outputs[0]
                result.num_cached_tokens = max(result.num_cached_tokens, out.num_cached_tokens or 0)
                if completion.token_ids:
                    new = list(completion.token_ids)
                    result.token_ids.extend(new)
                    sink(("tokens", new))
                if out.finished:
                    result.finish_reason = completion.finish_reason
            if result.finish_reason in _STOPPED_BY_ENGINE:
                sink(("error", T3RequestStoppedError(
                    f"vLLM's engine stopped this request before its end (finish reason {result.finish_reason!r}: "
                    f"the engine is shutting down or failed) after {len(result.token_ids)} tokens")))
                return
            sink(("done", result))
        except asyncio.CancelledError:
            raise
        except EngineDeadError as exc:
            sink(("error", T3EngineDeadError(
                "the T3 engine (vLLM engine core) died while this request was running; start a new ChatterboxTTS")))
            logger.error("vLLM engine core died: %s", exc)
        except Exception as exc:  # noqa: BLE001 - every failure goes to the waiting caller
            sink(("error", exc))

    def run(self, requests: list[T3Request], **sampling_overrides) -> Iterator[tuple[int, T3Result]]:
        """Submit all requests and yield ``(index, T3Result)`` as each one finishes. Leaving the
        loop early (break, error, KeyboardInterrupt) aborts the requests still running."""
        with T3Batch(self, requests, **sampling_overrides) as batch:
            while batch.unfinished:
                yield from batch.next_finished()

    def generate(self, requests: list[T3Request], **sampling_overrides) -> list[T3Result]:
        results: list = [None] * len(requests)
        for index, result in self.run(requests, **sampling_overrides):
            results[index] = result
        return results

    async def stream(self, request: T3Request, **sampling_overrides) -> AsyncIterator[list[int]]:
        """New token ids of one request as vLLM samples them, awaited from any event loop.
        Closing the iterator early aborts the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        future = self.submit(request, lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
                             **sampling_overrides)
        try:
            while True:
                kind, value = await events.get()
                if kind == "tokens":
                    yield value
                elif kind == "done":
                    return
                else:
                    raise value
        finally:
            future.cancel()

    def iterate_in_loop(self, iterator: AsyncIterator) -> Iterator:
        """Drive an async iterator on the engine's event loop from synchronous code; leaving
        early closes it there."""
        pending = None
        try:
            while True:
                pending = asyncio.run_coroutine_threadsafe(_anext(iterator), self._loop)
                try:
                    yield pending.result()
                except StopAsyncIteration:
                    return
        finally:
            if pending is not None and not pending.done():
                pending.cancel()  # interrupted while waiting (Ctrl-C): the step is still running
            if not self._closed:
                self._run_in_loop(_aclose(iterator))

    @property
    def cpu_sharing(self) -> str | None:
        """"alternate" or "overlap" on a CPU (see ``t3/cpu_turns.py``), None elsewhere."""
        if self.cpu_hold is None:
            return None
        return "alternate" if self.cpu_hold.alternate else "overlap"

    @cpu_sharing.setter
    def cpu_sharing(self, mode: str) -> None:
        if check_cpu_sharing(mode) is None:
            raise ValueError("cpu_sharing: give 'alternate' or 'overlap' to change it")
        if self.cpu_hold is not None:
            self.cpu_hold.alternate = mode == "alternate"

    def has_unfinished(self) -> bool:
        return self.unfinished_requests() > 0

    def unfinished_requests(self) -> int:
        """Requests vLLM has not finished (0 before the engine has started)."""
        engine = getattr(self, "engine", None)
        return 0 if engine is None else engine.get_num_unfinished_requests()

    # --- lifetime ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop vLLM's engine processes now rather than at interpreter exit."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run_in_loop(self._shutdown())
        finally:
            self._stop_loop()
            if self.cpu_hold is not None:
                self.cpu_hold.close()

    async def _shutdown(self) -> None:
        self.engine.shutdown()
        # AsyncLLM.__del__ shuts down again, at interpreter exit after its modules are torn down.
        self.engine.shutdown = lambda *args, **kwargs: None
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


class T3Batch:
    """Requests submitted together, whose results one thread collects as they finish.

    Every request is checked before any is sent; leaving the ``with`` block (or ``cancel``)
    aborts those still running.
    """

    def __init__(self, engine: T3Engine, requests: list[T3Request], **sampling_overrides):
        for request in requests:
            engine.check(request)
        self._events: queue.Queue = queue.Queue()
        self._futures: dict[int, concurrent.futures.Future] = {}
        try:
            for index, request in enumerate(requests):
                sink = _finished_events(self._events.put, index)
                self._futures[index] = engine.submit(request, sink, **sampling_overrides)
        except BaseException:
            self.cancel()
            raise
        self._unfinished = set(self._futures)

    @property
    def unfinished(self) -> int:
        return len(self._unfinished)

    def next_finished(self, timeout: float | None = None) -> list[tuple[int, T3Result]]:
        """Results that finished, waiting up to ``timeout`` s (None: until one does) for the
        first; a request's error is raised here."""
        finished = []
        try:
            index, (kind, value) = self._events.get(timeout=timeout)
            while True:
                self._unfinished.discard(index)
                if kind == "error":
                    raise value
                finished.append((index, value))
                index, (kind, value) = self._events.get_nowait()
        except queue.Empty:
            pass
        return finished

    def cancel(self) -> None:
        for future in self._futures.values():
            future.cancel()

    def __enter__(self) -> "T3Batch":
        return self

    def __exit__(self, *exc_info) -> None:
        self.cancel()


async def _anext(iterator: AsyncIterator):
    return await iterator.__anext__()


async def _aclose(iterator: AsyncIterator) -> None:
    # A cancelled step of an async generator ends on a later turn of the loop.
    while getattr(iterator, "ag_running", False):
        await asyncio.sleep(0.01)
    await iterator.aclose()


def _finished_events(put: Callable, index: int) -> Sink:
    """A sink that passes on only a request's end (its result or error), tagged with ``index``."""
    return lambda event: event[0] != "tokens" and put((index, event))
