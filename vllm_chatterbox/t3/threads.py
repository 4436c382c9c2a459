"""CPU threads of T3's engine process: how many, and that nothing in the user's script changes them.

On a CPU, T3's engine runs the model in vLLM's engine-core process (see ``T3Engine``), which vLLM
starts with ``spawn``. A spawned process re-imports the user's main script, so a module-level
``torch.set_num_threads(k)`` there (outside ``if __name__ == "__main__":``) runs again inside the
engine and would silently set the engine's threads. This module fixes them instead:

* :func:`engine_process_environment` (around the engine's start, in the caller's process) passes
  the thread count to the processes vLLM spawns in ``OMP_NUM_THREADS`` and marks them as T3
  engine processes of this process;
* :func:`enforce_engine_threads` (our vLLM plugin's ``register()``, which vLLM runs in every
  process it starts, after the re-import) puts torch's threads back to that count, with a warning
  naming what changed them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# Set in the environment of the engine processes: the pid of the process that started them.
ENGINE_PARENT_ENV = "CHATTERBOX_T3_ENGINE_PARENT"
_environment_lock = threading.RLock()


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def default_engine_threads() -> int:
    """``OMP_NUM_THREADS`` when the user set it, else every core this process may use."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else available_cores()


@contextlib.contextmanager
def scoped_environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` inside this block (what vLLM spawns there inherits them), the
    previous values restored after it. One block at a time across threads; nesting is fine."""
    with _environment_lock:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


# glibc's malloc asks for transparent huge pages (madvise) in the engine processes: at one request
# a decode step streams every packed weight (1.2 GB for Turbo) from memory once, and 2 MiB pages
# spare the TLB misses of 4 KiB ones. Page size changes no arithmetic. A hugetlb setting of the
# user's own in GLIBC_TUNABLES wins.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"


def engine_tunables(current: str | None) -> str:
    """``GLIBC_TUNABLES`` for the engine processes, given the caller's value."""
    if current and HUGE_PAGES_TUNABLE in current:
        return current
    return ":".join(filter(None, [current, f"{HUGE_PAGES_TUNABLE}=1"]))


def engine_process_environment(threads: int):
    """Environment of the engine processes vLLM spawns inside this block (restored after it)."""
    return scoped_environment({"OMP_NUM_THREADS": str(threads), ENGINE_PARENT_ENV: str(os.getpid()),
                               "GLIBC_TUNABLES": engine_tunables(os.environ.get("GLIBC_TUNABLES"))})


def enforce_engine_threads() -> None:
    """In a T3 engine process: torch's threads back to ``OMP_NUM_THREADS``, warning when something
    (a module-level ``torch.set_num_threads`` in the re-imported script) changed them. Elsewhere
    (the caller's process, other vLLM users) it does nothing."""
    parent = os.environ.get(ENGINE_PARENT_ENV)
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if parent is None or parent == str(os.getpid()) or not wanted.isdigit() or int(wanted) < 1:
        return
    import torch

    wanted_threads, current = int(wanted), torch.get_num_threads()
    if current != wanted_threads:
        logger.warning(
            "the T3 engine process found torch set to %d thread(s), most likely by a module-level "
            "torch.set_num_threads in the main script (vLLM's engine process re-imports it; put it under "
            "`if __name__ == \"__main__\":`); the engine uses %d (choose with t3_threads=)", current, wanted_threads)
        torch.set_num_threads(wanted_threads)
