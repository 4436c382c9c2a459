"""The T3 engine's CPU threads are ours to set, whatever the user's main script does at import.

vLLM spawns the engine process, which re-imports the main script: a module-level
``torch.set_num_threads`` there runs inside the engine. Before, it silently became the engine's
thread count (2 threads on vLLM's one bound core decoded at 1 token/s, 8x slower); now the engine
keeps ``t3_threads`` and warns.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.paths import REPO_ROOT
from vllm_chatterbox.config import CpuThreads
from vllm_chatterbox.t3.threads import engine_tunables


def _cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


@pytest.mark.skipif(not _cpu_platform(), reason="t3_threads sets the engine's CPU threads on vLLM's CPU backend")
def test_module_level_set_num_threads_cannot_change_the_engines_threads(waiting_user_script):
    """The script (tests/conftest.py: WAITING_SCRIPT) sets torch to 2 threads at module level and
    asks for ``t3_threads=1``; its engine process reports its torch threads and glibc tunables."""
    stdout = waiting_user_script.stdout
    result = [line.split() for line in stdout if line.startswith("RESULT")]
    engine_threads, tokens, main_threads = map(int, result[0][1:])
    assert engine_threads == 1  # t3_threads, not the script's 2
    assert tokens == 4
    assert main_threads == 2  # the caller's own torch setting is the caller's business
    assert "found torch set to 2 thread(s)" in waiting_user_script.stderr.read_text()
    tunables = [line.split()[1] for line in stdout if line.startswith("TUNABLES")]
    assert tunables == ["glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1"]  # huge pages for the weights


@pytest.mark.parametrize("user, engine", [
    (None, "glibc.malloc.hugetlb=1"),
    ("", "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # the user's choice wins
    ("glibc.malloc.hugetlb=2:glibc.malloc.arena_max=2", "glibc.malloc.hugetlb=2:glibc.malloc.arena_max=2"),
])
def test_engine_tunables_ask_for_huge_pages_unless_the_user_chose(user, engine):
    assert engine_tunables(user) == engine


def test_enforcement_acts_only_in_engine_processes():
    """In the caller's process (or any process not started for a T3 engine) nothing changes."""
    code = textwrap.dedent('''
        import os, torch
        from vllm_chatterbox.t3.threads import ENGINE_PARENT_ENV, enforce_engine_threads
        torch.set_num_threads(2)
        os.environ["OMP_NUM_THREADS"] = "1"
        enforce_engine_threads()                      # no marker: not an engine process
        os.environ[ENGINE_PARENT_ENV] = str(os.getpid())
        enforce_engine_threads()                      # marked by itself: the caller
        untouched = torch.get_num_threads()
        os.environ[ENGINE_PARENT_ENV] = str(os.getppid())
        enforce_engine_threads()                      # started for an engine by another process
        print(untouched, torch.get_num_threads())
    ''')
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["2", "1"]
    assert run.stderr.count("found torch set to 2 thread(s)") == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", os.cpu_count() + 1])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be an integer"):
        CpuThreads(t3=bad)
    with pytest.raises(ValueError, match="s3gen_threads"):
        CpuThreads(s3gen=bad)
