"""On a CPU, T3's engine and S3Gen take turns on the cores instead of fighting over them.

T3 decodes in vLLM's engine process, S3Gen computes in the caller's; by default each runs an
OpenMP team as large as the machine. When both compute at once (a stream's pieces are vocoded
while T3 keeps decoding; a server with several requests) the two teams oversubscribe the cores
and stall each other: OpenMP threads spin waiting for team mates that are descheduled, so each
side runs far slower than on half the cores (a Turbo stream's first piece: 2.7x its time alone).

``cpu_sharing="alternate"`` makes them take turns: while an S3Gen call of the caller's process
runs, the engine holds its next model step. One case is left to overlap: T3 decoding a single
request while S3Gen makes a piece of a stream that has already sounded. T3 at batch 1 is bound
by memory bandwidth and leaves compute that an overlapping S3Gen uses: a lone Turbo stream took
53.4 s holding for every piece and 40.9 s overlapping, while holding for its first piece is what
brings its first audio forward (2.99 -> 2.39 s; bench/stream.py, README "Turbo streaming"). The flag lives in a small shared-memory block (a
file in ``/dev/shm``, mapped by both processes; vLLM spawns the engine, so nothing can be
inherited); its path goes to the engine in the environment, like the thread count
(``t3/threads.py``). Words of the block (int64):

* ``HOLDERS``: S3Gen calls in progress (a count: several threads may vocode at once);
* ``EPOCH``: how many times ``HOLDERS`` went from 0 to 1;
* ``MAX_WAIT_US``: the safety bound: an engine step waits at most this long for one hold (a
  caller that never lets go cannot freeze T3; after giving up on a hold the engine waits for it
  no more, so a stuck flag costs one bound, not one per step);
* ``WAITS``, ``WAITED_US``, ``GAVE_UP``: written by the engine, read by tests and benchmarks.

The caller's side is :class:`EngineHold` (``with hold.hold(): ...``), the engine's
:class:`EngineTurn` (``wait()`` at the start of each model forward: one memory read when no
hold is set). ``"overlap"`` (the caller's holds do nothing) is the default where the user split
the cores (``t3_threads`` + ``s3gen_threads`` within the cores), where two teams do not collide.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

# The engine's environment: the path of the shared block.
ENGINE_TURNS_ENV = "CHATTERBOX_T3_CPU_TURNS"
DEFAULT_MAX_WAIT_S = 10.0
POLL_S = 0.001

HOLDERS, EPOCH, MAX_WAIT_US, WAITS, WAITED_US, GAVE_UP = range(6)
_WORDS = 6
_BLOCK_BYTES = 8 * _WORDS


def default_cpu_sharing(engine_threads: int, s3gen_threads: int, cores: int) -> str:
    """Alternate when the two teams together exceed the cores (the default: each takes every
    core), overlap when the user split them."""
    return "alternate" if engine_threads + s3gen_threads > cores else "overlap"


def _map(fd: int) -> tuple[mmap.mmap, memoryview]:
    block = mmap.mmap(fd, _BLOCK_BYTES)
    return block, memoryview(block).cast("q")


class EngineHold:
    """The caller's side: while a :meth:`hold` block runs (and ``alternate`` is on), T3's engine
    holds its next step. Thread-safe; blocks nest. ``t3_batch``: how many requests T3 decodes now
    (None: always taken as more than one)."""

    def __init__(self, alternate: bool, max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 t3_batch: Callable[[], int] | None = None):
        directory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        fd, self.path = tempfile.mkstemp(prefix="vllm-chatterbox-t3-turns-", dir=directory)
        try:
            os.ftruncate(fd, _BLOCK_BYTES)
            self._block, self._words = _map(fd)
        finally:
            os.close(fd)
        self._lock = threading.Lock()
        self._closed = False
        self.alternate = alternate
        self.max_wait_s = max_wait_s
        self.t3_batch = t3_batch

    def environment(self) -> dict[str, str]:
        """What the engine processes need (see :class:`EngineTurn`)."""
        return {ENGINE_TURNS_ENV: self.path}

    @property
    def max_wait_s(self) -> float:
        return self._words[MAX_WAIT_US] / 1e6

    @max_wait_s.setter
    def max_wait_s(self, seconds: float) -> None:
        self._words[MAX_WAIT_US] = int(seconds * 1e6)

    def _worth_holding(self, first_audio: bool) -> bool:
        """Hold for a stream's first audio, or while T3 decodes a batch (see the module's docstring)."""
        return first_audio or self.t3_batch is None or self.t3_batch() > 1

    @contextlib.contextmanager
    def hold(self, first_audio: bool = False) -> Iterator[None]:
        """The engine holds its next step inside this block (when alternating, and the block
        makes a stream's first audio or T3 decodes more than one request as it begins)."""
        worth_holding = self.alternate and self._worth_holding(first_audio)
        with self._lock:
            counted = worth_holding and not self._closed
            if counted:
                self._words[HOLDERS] += 1
                if self._words[HOLDERS] == 1:
                    self._words[EPOCH] += 1
        try:
            yield
        finally:
            if counted:
                with self._lock:
                    if not self._closed:
                        self._words[HOLDERS] -= 1

    @property
    def holders(self) -> int:
        return self._words[HOLDERS]

    def engine_stats(self) -> tuple[int, float, int]:
        """(engine steps that waited, seconds they waited, holds the engine gave up on)."""
        return self._words[WAITS], self._words[WAITED_US] / 1e6, self._words[GAVE_UP]

    def unlink(self) -> None:
        """Remove the block's name (both mappings stay valid): once the engine has mapped it, a
        crash can leave nothing behind in /dev/shm."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._words.release()
            self._block.close()
        self.unlink()


class EngineTurn:
    """The engine's side: :meth:`wait` before each model step."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_RDWR)
        try:
            self._block, self._words = _map(fd)
        finally:
            os.close(fd)
        self._given_up_epoch = 0
        self._logged = False

    @classmethod
    def from_environment(cls) -> EngineTurn | None:
        """In an engine process started with an :class:`EngineHold`: its turn; elsewhere None."""
        path = os.environ.get(ENGINE_TURNS_ENV)
        if not path:
            return None
        try:
            return cls(path)
        except OSError as exc:
            logger.warning("T3 engine: cannot map the CPU turn flag %s (%s); T3 and S3Gen overlap", path, exc)
            return None

    def wait(self) -> None:
        """Return at once when no S3Gen call holds the cores; else when the last one ends, or
        after the safety bound."""
        if self._words[HOLDERS]:
            self._wait_while_held()

    def _wait_while_held(self) -> None:
        words = self._words
        if words[EPOCH] == self._given_up_epoch:
            return  # this hold already outlasted the bound once
        start = time.monotonic()
        deadline = start + words[MAX_WAIT_US] / 1e6
        while words[HOLDERS]:
            if time.monotonic() >= deadline:
                self._given_up_epoch = words[EPOCH]
                words[GAVE_UP] += 1
                if not self._logged:
                    self._logged = True
                    # A long batched S3Gen call meets the bound too (8 Turbo streams on 2 cores):
                    # not a fault to shout about in a user's terminal.
                    logger.info("T3 engine: an S3Gen call held the CPU for more than %.1f s; T3 goes on beside "
                                   "it (cpu_sharing: logged once)", words[MAX_WAIT_US] / 1e6)
                break
            time.sleep(POLL_S)
        words[WAITS] += 1
        words[WAITED_US] += int((time.monotonic() - start) * 1e6)
