"""``t3/lifetime.py``'s prompt exit of an engine process, on a stand-in for vLLM's engine core (the
real one's end is exercised by every test that closes an engine: ``tests/test_lifetime.py``,
``tests/test_interrupts.py``, ``tests/server/test_lifecycle.py``)."""

import atexit
import multiprocessing
import sys
import types

import pytest

from vllm_chatterbox.t3 import lifetime


def engine_process(outcome: str, marker: str) -> None:
    """Runs as vLLM's ``run_engine_core`` does: its teardown (``EngineCore.shutdown``) in a
    ``finally`` while the way out (SystemExit from a requested stop, or a failure) propagates."""
    core = types.ModuleType("vllm.v1.engine.core")

    class EngineCore:
        def shutdown(self):
            with open(marker, "a") as file:
                file.write("teardown\n")

    core.EngineCore = EngineCore
    sys.modules["vllm.v1.engine.core"] = core
    lifetime.die_with_parent()
    lifetime.die_with_parent()  # vLLM loads its plugins more than once: one patch only

    def interpreter_teardown():
        with open(marker, "a") as file:
            file.write("interpreter teardown\n")

    atexit.register(interpreter_teardown)  # registered before the engine stops, as torch's are
    try:
        if outcome == "stopped":
            raise SystemExit(0)
        raise RuntimeError("the engine failed")
    finally:
        EngineCore().shutdown()


@pytest.mark.parametrize("outcome, code, teardown", [("stopped", 0, "teardown\n"),
                                                      ("failed", 1, "teardown\ninterpreter teardown\n")])
def test_an_engine_process_stopped_on_request_skips_the_interpreter_teardown(tmp_path, outcome, code, teardown):
    marker = tmp_path / "marker"
    process = multiprocessing.get_context("spawn").Process(target=engine_process, args=(outcome, str(marker)))
    process.start()
    process.join(60)
    assert process.exitcode == code
    assert marker.read_text() == teardown
