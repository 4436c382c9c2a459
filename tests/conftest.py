"""Session fixtures shared by more than one test folder (each engine start costs 15-50 s and
2-3 GB; new tests reuse these rather than start their own):

- ``tiny_model_dir`` / ``tts_tiny``: a freshly generated tiny random model (``make_test_model``,
  seed 0) and one engine on it: ``tests/pipeline``, the Python side of ``tests/server`` (whose
  server subprocess serves the same files) and the CLI tests' ``--model``;
- ``turbo_model_dir`` / ``turbo_tts``: the original's tiny Turbo checkpoint and one Turbo engine
  (``tests/turbo``: the Turbo model through the public API; ``tests/t3/gpt2``: its GPT-2 T3
  against the original's recordings; the Turbo server test);
- ``waiting_user_script``: a library user's script in a fresh process, with its own engine, that
  sets torch's threads at module level, reports what its engine process runs with and waits:
  ``tests/t3/test_threads.py`` checks the report, ``tests/test_lifetime.py`` kills it with -9.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.paths import FIXTURE_CKPT, REPO_ROOT, TURBO_CKPT
from vllm_chatterbox.config import tiny_config, tiny_turbo_config
from vllm_chatterbox.demo_model import make_test_model

RAW_RECORDER = "tests.t3.gpt2.recorder:RawRecorder"
FORCING_RECORDER = "tests.t3.gpt2.recorder:ForcingRecorder"
# The tiny models need about 1 KiB of KV cache per token; the machine is shared. vLLM's CPU
# default (2 GiB per engine, allocated at start) for each of the suite's engines alive at once
# exhausted a loaded 24 GiB machine; 256 MiB holds every batch the tests make many times over.
KV_CACHE_BYTES = 256 << 20


class NoEngine:
    """Stands in for the T3 engine (patch ``vllm_chatterbox.tts.T3Engine``) where a test must never
    reach vLLM: any use but closing fails the test."""

    def __init__(self, *args, **kwargs):
        pass

    shutdowns = 0
    cpu_hold = None  # no engine process: nothing to take turns with

    def shutdown(self):
        self.shutdowns += 1

    def __getattr__(self, name):
        raise AssertionError(f"the T3 engine was used ({name})")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("tiny-model"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tts_tiny(tiny_model_dir):
    from vllm_chatterbox.tts import ChatterboxTTS

    model = ChatterboxTTS.from_dir(tiny_model_dir, max_num_seqs=32, max_model_len=1024,
                                   kv_cache_memory_bytes=KV_CACHE_BYTES)
    yield model
    model.t3_engine.shutdown()


@pytest.fixture(scope="session")
def turbo_cfg():
    return tiny_turbo_config()


@pytest.fixture(scope="session")
def turbo_model_dir(tmp_path_factory, turbo_cfg):
    """The original's tiny Turbo checkpoint, unchanged, plus the override file with its dimensions."""
    directory = tmp_path_factory.mktemp("turbo-model")
    for path in TURBO_CKPT.iterdir():
        (directory / path.name).symlink_to(path)
    turbo_cfg.save(directory)
    return directory


@pytest.fixture(scope="session")
def turbo_tts(turbo_model_dir):
    """The public API on the fixture; its engine also carries the test recorders (one engine per session)."""
    from vllm_chatterbox.tts import ChatterboxTTS

    tts = ChatterboxTTS.from_dir(turbo_model_dir, extra_logits_processors=[RAW_RECORDER],
                                 after_sampler_processors=[FORCING_RECORDER], max_num_seqs=32,
                                 kv_cache_memory_bytes=KV_CACHE_BYTES)
    yield tts
    tts.t3_engine.shutdown()


# vLLM spawns the engine process, which re-imports the main script: the module-level
# torch.set_num_threads runs inside the engine too (tests/t3/test_threads.py says what must follow).
# The probes run a function inside the engine process (pickled), which vLLM allows only when told.
# 64 MiB of KV cache, not the CPU default's 2 GiB (tests/test_lifetime.py says why).
WAITING_SCRIPT = textwrap.dedent('''
    import sys
    import time

    import torch

    from vllm_chatterbox.tts import ChatterboxTTS

    torch.set_num_threads(2)  # module level: vLLM's engine process re-imports this script and runs it


    def torch_threads(model):
        return torch.get_num_threads()


    def glibc_tunables(model):
        import os

        return os.environ.get("GLIBC_TUNABLES")


    if __name__ == "__main__":
        tts = ChatterboxTTS.from_dir(sys.argv[1], t3_threads=1, max_num_seqs=2, max_model_len=512,
                                     kv_cache_memory_bytes=64 << 20)
        tokens = tts.generate_speech_tokens("Hello there.", max_new_tokens=4, temperature=0)[0]
        engine = tts.t3_engine
        threads = engine._run_in_loop(engine.engine.collective_rpc("apply_model", args=(torch_threads,)))
        tunables = engine._run_in_loop(engine.engine.collective_rpc("apply_model", args=(glibc_tunables,)))
        print("RESULT", threads[0], len(tokens), torch.get_num_threads())
        print("TUNABLES", tunables[0])
        print("ready", flush=True)
        time.sleep(600)
''')


@dataclass
class WaitingScript:
    process: subprocess.Popen
    stdout: list[str]  # its lines up to "ready"
    stderr: Path  # its and its engine process's stderr (a file: nobody reads a pipe while it waits)


@pytest.fixture(scope="session")
def waiting_user_script(tmp_path_factory):
    """A user's script, started in a fresh process on the original's tiny checkpoint, once it has
    printed "ready" (its engine is up and probed). Its checks are two tests' (threads, and what a
    kill -9 leaves); starting it once saves a process and an engine start (about 30 s of CPU)."""
    directory = tmp_path_factory.mktemp("waiting-script")
    model_dir = directory / "model"
    model_dir.mkdir()
    for name in ("t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt"):
        (model_dir / name).symlink_to(FIXTURE_CKPT / name)
    tiny_config().save(model_dir)
    script = directory / "user_script.py"
    script.write_text(WAITING_SCRIPT, encoding="utf-8")
    env = {**os.environ, "VLLM_ALLOW_INSECURE_SERIALIZATION": "1", "PYTHONPATH": str(REPO_ROOT),
           "VLLM_CHATTERBOX_CACHE": str(directory / "cache"),
           "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}  # the user's own tunables reach the engine too
    env.pop("OMP_NUM_THREADS", None)
    stderr = directory / "stderr.txt"
    with open(stderr, "w") as stderr_file:
        process = subprocess.Popen([sys.executable, str(script), str(model_dir)], env=env, cwd=directory,
                                   stdout=subprocess.PIPE, stderr=stderr_file, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if lines[-1] == "ready":
                break
        else:
            raise AssertionError(f"the script ended before its engine was ready: {stderr.read_text()[-3000:]}")
        yield WaitingScript(process, lines, stderr)
    finally:
        try:
            engines = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:  # killed by tests/test_lifetime.py, which saw to its engine
            engines = []
        process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        for engine in engines:
            try:
                engine.kill()
            except psutil.NoSuchProcess:
                pass


# Parallel runs (pytest-xdist; pyproject's addopts: ``-n auto --dist loadgroup``). Every worker is
# a pytest process of its own with its own session and package fixtures, so a shared engine is
# started once per worker that runs a test using it. ``pytest_collection_modifyitems`` below puts
# all the tests sharing an engine in one xdist group (a group runs on one worker, in collection
# order), and leaves the rest (pure functions, tests that start their own processes) free to
# spread over the workers.
SESSION_ENGINES = ("tts_tiny", "turbo_tts", "waiting_user_script")
# A worker's engines alive at once (a session engine or two, a server's, a folder's package
# engines) peak at about this much memory; more workers than cores gains nothing.
WORKER_MEMORY_BYTES = 8 << 30
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per usable core, as many as the available memory holds engines
    for, at most MAX_WORKERS (2 on the 2-core, 24 GiB machine)."""
    cores = len(os.sched_getaffinity(0))
    by_memory = psutil.virtual_memory().available // WORKER_MEMORY_BYTES
    return max(1, min(cores, by_memory, MAX_WORKERS))


def _shared_fixture_keys(item) -> set[str]:
    """What ``item`` shares with other tests that a worker would have to start again: session
    engines, package fixtures (engines and servers stopped when their folder is done) and, per
    module, its module fixtures."""
    # A parametrised test may ask for a session engine by name (request.getfixturevalue).
    params = getattr(getattr(item, "callspec", None), "params", {})
    by_name = {value for value in params.values() if isinstance(value, str)}
    keys = {f"session:{name}" for name in SESSION_ENGINES if name in by_name}
    for name, definitions in item._fixtureinfo.name2fixturedefs.items():
        if name not in item.fixturenames:
            continue
        scope = definitions[-1].scope
        if scope == "session" and name in SESSION_ENGINES:
            keys.add(f"session:{name}")
        elif scope == "package":
            keys.add(f"package:{definitions[-1].baseid}:{name}")
        elif scope in ("module", "class"):
            keys.add(f"module:{item.nodeid.split('::')[0]}")
    return keys


def xdist_groups(item_keys: list[list[str]]) -> list[str | None]:
    """Each item's xdist group, from what each item shares (``item_keys[i]``, sorted keys; None:
    the item shares nothing): items linked by a shared key, directly or through other items,
    get one group, named after one of their keys."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for keys in item_keys:
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
    return [root(keys[0]) if keys else None for keys in item_keys]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """On an xdist worker: one group per set of tests linked by what they share (a test using two
    shared things joins their groups), and the order xdist hands out work units in."""
    if not getattr(config.option, "loadgroup", False):
        return  # not an xdist worker of a `--dist loadgroup` run (the controller does not collect)
    item_keys = [[] if item.get_closest_marker("xdist_group") else sorted(_shared_fixture_keys(item))
                 for item in items]
    declared, groups, free = [], {}, []
    for item, group in zip(items, xdist_groups(item_keys)):
        if item.get_closest_marker("xdist_group"):
            declared.append(item)
        elif group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            groups.setdefault(group, []).append(item)
        else:
            free.append(item)
    # xdist hands out units in collection order (pyproject: --no-loadscope-reorder): the groups a
    # module declares first (the Ray cluster's: few tests, the longest), then the others, most tests
    # first, so the longest units start at once on different workers; the free tests fill in.
    by_size = sorted(groups.values(), key=len, reverse=True)
    items[:] = declared + [item for group in by_size for item in group] + free
