"""Engine processes die with the process that started them.

vLLM's engine-core process outlives a parent killed with SIGKILL (nothing in the parent runs to
stop it), holding gigabytes and the cores forever. Called in every process vLLM starts (the
plugin hook), this asks Linux to SIGKILL the child when its parent dies (``PR_SET_PDEATHSIG``)
and, where that is unavailable or the parent is already gone, a watchdog thread checks the
parent's pid once a second.
"""

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


def _watch_parent(parent_pid: int) -> None:
    stop = threading.Event()
    while not stop.wait(WATCH_INTERVAL_S):
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)
