"""vLLM's own log lines: off unless asked for.

A script that makes speech should print what it does, not vLLM's start-up report (forty lines,
some of them alarming and irrelevant here, e.g. that disabling chunked prefill "may cause the
engine to crash", which T3 does on purpose). vLLM logs at the level of the engine option
``log_level``, else ``VLLM_LOGGING_LEVEL``, else (our default) ``ERROR``. At ``ERROR`` the rest of
the noise goes too: vLLM's checkpoint loading bars, torch's C++ notices in the engine process
(its NUMA binding), a deprecation warning vLLM's Triton dispatcher triggers, and the "Triton is
installed, but doesn't include CPU backend" line that vLLM's imports log before vLLM configures
its logging (so Python's last-resort handler prints it), in this process and in the engine
process, which re-imports the main script, and with it this package, before vLLM's imports.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from vllm_chatterbox.t3.threads import scoped_environment

# Set in the environment of engine processes started quiet.
QUIET_ENV = "CHATTERBOX_T3_QUIET_VLLM"
HARMLESS_WARNING = "ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning:vllm.triton_utils.dispatcher"
DEFAULT_VLLM_LOG_LEVEL = "ERROR"


def vllm_log_level(engine_options: dict) -> str:
    """The level vLLM logs at: the ``log_level`` engine option, ``VLLM_LOGGING_LEVEL``, or ERROR."""
    return str(engine_options.get("log_level") or os.environ.get("VLLM_LOGGING_LEVEL") or DEFAULT_VLLM_LOG_LEVEL)


def is_quiet(log_level: str) -> bool:
    return log_level.upper() in ("ERROR", "CRITICAL")


@contextlib.contextmanager
def quiet_vllm_imports(quiet: bool) -> Iterator[None]:
    """vLLM's first imports in this process, without the lines they log before vLLM's logging is
    configured."""
    if not quiet:
        yield
        return
    vllm_logger = logging.getLogger("vllm")
    level = vllm_logger.level
    vllm_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        vllm_logger.setLevel(level)


@contextlib.contextmanager
def quiet_engine_environment(quiet: bool) -> Iterator[None]:
    """Environment of the engine processes vLLM spawns inside this block (restored after it)."""
    if not quiet:
        yield
        return
    warning_filters = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), HARMLESS_WARNING)))
    with scoped_environment({QUIET_ENV: "1", "TORCH_CPP_LOG_LEVEL": os.environ.get("TORCH_CPP_LOG_LEVEL", "ERROR"),
                             "PYTHONWARNINGS": warning_filters}):
        yield


def quiet_engine_process_imports() -> None:
    """In an engine process started quiet (a no-op elsewhere): vLLM's logger at ERROR until vLLM
    configures it from the engine's config. Runs when the re-imported main script imports this
    package, before the engine's own imports."""
    if os.environ.get(QUIET_ENV) == "1":
        logging.getLogger("vllm").setLevel(logging.ERROR)
