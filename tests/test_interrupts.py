"""Ctrl-C or SIGTERM of a library user's script mid-stream (issue 25.6), as users meet it (a
subprocess): it exits promptly, with at most the user's own KeyboardInterrupt traceback, and
leaves no engine process behind. Clean exit, the missing ``__main__`` guard and kill -9 are in
tests/test_lifetime.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


# 64 MiB of KV cache, not the CPU default's 2 GiB (tests/test_lifetime.py says why).
SCRIPT = '''
import sys
from vllm_chatterbox.tts import ChatterboxTTS

def main(model, mode):
    tts = ChatterboxTTS.from_dir(model, max_model_len=1024, kv_cache_memory_bytes=64 << 20)
    wav = tts.generate("Hello there.", max_new_tokens=8, seed=1, watermark=False)[0]
    print("generated", len(wav), flush=True)
    if mode == "busy":
        for index, piece in enumerate(tts.stream("A sentence that goes on. " * 30, max_new_tokens=600,
                                                 watermark=False)):
            if index == 0:
                print("streaming", flush=True)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''


def start(tmp_path, source: str, *args) -> subprocess.Popen:
    script = tmp_path / "user_script.py"
    script.write_text(source)
    env = dict(os.environ, VLLM_CHATTERBOX_CACHE=str(tmp_path / "cache"))
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)


def wait_for_line(process: subprocess.Popen, word: str, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if word in line:
            return
        if not line and process.poll() is not None:
            pytest.fail(f"the script ended before {word!r}: {process.stderr.read()[-3000:]}")
    pytest.fail(f"no {word!r} within {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_mid_stream_exits_promptly_and_quietly(tmp_path, tiny_model_dir, signum):
    """Ctrl-C reaches the whole process group (the engine process too); SIGTERM only the script."""
    process = start(tmp_path, SCRIPT, tiny_model_dir, "busy")
    try:
        wait_for_line(process, "streaming")
        children = descendants(process.pid)
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        started = time.monotonic()
        out, err = process.communicate(timeout=30)
        # vLLM waits up to 5 s for its engine process to exit before killing it; on this loaded
        # 2-core machine a Ctrl-C exit took 6.8-10.5 s.
        assert time.monotonic() - started < 15
        assert process.returncode != 0
        assert not wait_gone(children, 10), "an engine process outlived the script"
        for word in ("EngineDeadError", "Exception ignored"):
            assert word not in out + err, (word, (out + err)[-3000:])
        assert (out + err).count("Traceback") <= 1, (out + err)[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        for pid in alive(descendants(process.pid)):
            os.kill(pid, signal.SIGKILL)
