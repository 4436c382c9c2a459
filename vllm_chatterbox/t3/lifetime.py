"""Engine processes die with the process that started them.

vLLM's engine-core process outlives a parent killed with SIGKILL (nothing in the parent runs to
stop it), holding gigabytes and the cores forever. Called in every process vLLM starts (the
plugin hook), this asks Linux to SIGKILL the child when its parent dies (``PR_SET_PDEATHSIG``)
and, where that is unavailable or the parent is already gone, a watchdog thread checks the
parent's pid once a second.

Its end is prompt too: once vLLM has shut the engine down at its parent's request, the process
exits without Python's interpreter teardown, which in an engine process keeps a core busy for 2-4 s
(mostly torch deregistering every custom operator) for nothing, while vLLM's parent waits for it
(up to 5 s, then kills it): every ``close()`` and server stop waited for that.
"""

import atexit
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 1.0
_watched = False


def die_with_parent() -> None:
    """In a child process (a no-op in the main one): end it when its parent dies, whatever the signal."""
    global _watched
    parent = multiprocessing.parent_process()
    if parent is None or _watched:
        return
    _watched = True
    parent_pid = parent.pid
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError):
            logger.debug("prctl unavailable; relying on the parent watchdog")
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="chatterbox-parent-watchdog",
                     daemon=True).start()
    _exit_promptly_after_a_clean_shutdown()


def _watch_parent(parent_pid: int) -> None:
    stop = threading.Event()
    while not stop.wait(WATCH_INTERVAL_S):
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)


def _exit_promptly_after_a_clean_shutdown() -> None:
    """Once vLLM's engine core has torn itself down on its way out of a requested stop (it runs
    its teardown while a SystemExit propagates), end the process with that exit status at the
    start of Python's exit: the handler runs before the interpreter's teardown. An engine that
    fails (any other exception) exits as before, traceback and status included."""
    from vllm.v1.engine.core import EngineCore

    shutdown = EngineCore.shutdown
    if getattr(shutdown, "exits_promptly", False):
        return

    def shutdown_then_exit_promptly(engine_core: EngineCore) -> None:
        leaving = sys.exc_info()[1]  # what run_engine_core's ``finally`` is propagating
        shutdown(engine_core)
        if isinstance(leaving, SystemExit) and (leaving.code is None or isinstance(leaving.code, int)):
            atexit.register(_exit_now, leaving.code or 0)  # the last registered runs first

    shutdown_then_exit_promptly.exits_promptly = True
    EngineCore.shutdown = shutdown_then_exit_promptly


def _exit_now(status: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
