"""vLLM's own log lines are off unless asked for (``vllm_chatterbox.t3.quiet``); a library script
that runs an engine prints nothing of vLLM's (``tests/test_lifetime.py``)."""

import logging
import os

import pytest

from vllm_chatterbox.t3 import quiet


@pytest.mark.parametrize("options, env, level", [
    ({}, None, "ERROR"),
    ({}, "INFO", "INFO"),
    ({"log_level": "DEBUG"}, "ERROR", "DEBUG"),
])
def test_the_level_is_the_option_then_the_environment_then_error(monkeypatch, options, env, level):
    if env is None:
        monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    else:
        monkeypatch.setenv("VLLM_LOGGING_LEVEL", env)
    assert quiet.vllm_log_level(options) == level
    assert quiet.is_quiet(level) == (level == "ERROR")


def test_the_engine_environment_is_set_inside_the_block_and_restored_after(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    monkeypatch.delenv("TORCH_CPP_LOG_LEVEL", raising=False)
    monkeypatch.delenv(quiet.QUIET_ENV, raising=False)
    with quiet.quiet_engine_environment(True):
        assert os.environ[quiet.QUIET_ENV] == "1"
        assert os.environ["TORCH_CPP_LOG_LEVEL"] == "ERROR"
        assert os.environ["PYTHONWARNINGS"] == f"default,{quiet.HARMLESS_WARNING}"
    assert quiet.QUIET_ENV not in os.environ and "TORCH_CPP_LOG_LEVEL" not in os.environ
    assert os.environ["PYTHONWARNINGS"] == "default"
    with quiet.quiet_engine_environment(False):
        assert quiet.QUIET_ENV not in os.environ and "TORCH_CPP_LOG_LEVEL" not in os.environ


def test_an_engine_process_started_quiet_silences_vllm_until_vllm_configures_it(monkeypatch):
    vllm_logger = logging.getLogger("vllm")
    monkeypatch.setattr(vllm_logger, "level", logging.NOTSET)
    monkeypatch.delenv(quiet.QUIET_ENV, raising=False)
    quiet.quiet_engine_process_imports()
    assert vllm_logger.level == logging.NOTSET, "only in engine processes started quiet"
    monkeypatch.setenv(quiet.QUIET_ENV, "1")
    quiet.quiet_engine_process_imports()
    assert vllm_logger.level == logging.ERROR
    with quiet.quiet_vllm_imports(True):
        assert vllm_logger.level == logging.ERROR
    assert vllm_logger.level == logging.ERROR
