"""The engine's lifetime as a library user's script meets it: started, used, and gone at exit
without a word, whether or not the script closes the model."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.paths import REPO_ROOT

# The scripts' engines reserve 64 MiB of KV cache, not the CPU default's 2 GiB: allocating and
# zeroing that took a core 1-2 s in each script, and these tiny-model runs need under 1 MiB.
UNCLOSED_SCRIPT = textwrap.dedent("""
    import sys
    from vllm_chatterbox import ChatterboxTTS

    if __name__ == "__main__":
        tts = ChatterboxTTS.from_dir(sys.argv[1], max_model_len=512, kv_cache_memory_bytes=64 << 20)
        wav = tts.generate("Hello there.", max_new_tokens=4, seed=1, n_timesteps=2)[0]
        pieces = list(tts.stream("A short stream.", max_new_tokens=4, seed=1, n_timesteps=2))
        print("generated", len(wav), len(pieces))
        # no close(): the exit hook shuts the engine and the vocoder thread down
""")


def run_script(tmp_path, code: str, *args, timeout=600):
    script = tmp_path / "user_script.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), VLLM_CHATTERBOX_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def test_script_that_never_closes_exits_quietly(tmp_path, tiny_model_dir):
    result = run_script(tmp_path, UNCLOSED_SCRIPT, tiny_model_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "generated" in result.stdout
    for alarm in ("Traceback", "ERROR", "Exception ignored"):
        assert alarm not in output, output[-3000:]
    # Nor vLLM's start-up report (its INFO and WARNING lines, the Triton notice its imports print in
    # both processes, its loading bars) or torch's NUMA notice and deprecation warnings: the
    # script's own line is all it prints.
    assert result.stdout.strip().splitlines() == [next(line for line in result.stdout.splitlines()
                                                      if line.startswith("generated"))], output[-3000:]
    assert result.stderr.strip() == "", result.stderr[-3000:]


UNGUARDED_SCRIPT = textwrap.dedent("""
    import sys
    from vllm_chatterbox import ChatterboxTTS

    tts = ChatterboxTTS.from_dir(sys.argv[1], max_model_len=512)
    print("generated", len(tts.generate("Hello there.", max_new_tokens=4, n_timesteps=2)[0]))
""")


def test_script_without_main_guard_is_told_to_add_it(tmp_path, tiny_model_dir):
    """vLLM's engine process re-runs the script; without the guard that must say what to do. On
    a CPU (where vLLM always spawns it) that is said before the engine process is started: one
    traceback, ours, and none of the engine process's failure."""
    result = run_script(tmp_path, UNGUARDED_SCRIPT, tiny_model_dir)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "generated" not in result.stdout, output[-3000:]
    assert 'if __name__ == "__main__":' in result.stderr.strip().splitlines()[-1], output[-3000:]
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        assert output.count("Traceback") == 1 and "EngineCore" not in output, output[-3000:]


def child_pids(pid: int) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            children.add(int(entry))
    return children


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_engine_process_dies_with_a_killed_script(waiting_user_script):
    """kill -9 of the user's script (tests/conftest.py: a script waiting with its engine up) must
    not leave vLLM's engine process behind."""
    process = waiting_user_script.process
    try:
        engines = child_pids(process.pid)
        assert engines, "no engine process found"
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in engines):
            time.sleep(0.2)
        left = [pid for pid in engines if alive(pid)]
    finally:
        process.kill()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"engine processes {left} outlived their parent"
