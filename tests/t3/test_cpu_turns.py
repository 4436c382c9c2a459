"""T3's engine and S3Gen take turns on a CPU (``cpu_sharing``, ``t3/cpu_turns.py``).

The flag's two sides in one process (they share memory the same way across processes), then
the session Turbo engine: held, a request makes no progress and finishes with the same tokens
once let go; a hold that never ends costs the engine one safety bound; overlap never holds; a
stream's vocoder calls really hold the engine; a later piece holds it only while T3 decodes a
batch.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from vllm_chatterbox import cli
from vllm_chatterbox.config import CpuThreads
from vllm_chatterbox.t3.cpu_turns import EngineHold, EngineTurn, default_cpu_sharing
from vllm_chatterbox.t3.engine import T3Batch


@pytest.fixture
def hold():
    hold = EngineHold(alternate=True)
    yield hold
    hold.close()


def _wait_in_thread(turn: EngineTurn) -> tuple[threading.Thread, list[float]]:
    done: list[float] = []

    def run():
        turn.wait()
        done.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_a_held_turn_waits_until_the_last_holder_lets_go(hold):
    turn = EngineTurn(hold.path)
    turn.wait()  # clear: returns at once and counts no wait
    assert hold.engine_stats() == (0, 0.0, 0)
    with hold.hold():
        with hold.hold():  # nested: a count, not a bool
            thread, done = _wait_in_thread(turn)
            time.sleep(0.3)
            assert not done, "the engine's step ran while S3Gen held the cores"
        time.sleep(0.2)
        assert not done, "the inner block's end released the engine while the outer one still held it"
        released = time.monotonic()
    thread.join(timeout=5)
    assert done and done[0] - released < 1.0
    waits, waited, gave_up = hold.engine_stats()
    assert waits == 1 and gave_up == 0 and waited >= 0.45


def test_the_safety_bound_frees_the_engine_once_per_hold(hold):
    turn = EngineTurn(hold.path)
    # Bound and margins wide enough for a loaded CI machine: a second bound would cost 1 s.
    hold.max_wait_s = 1.0
    with hold.hold():
        start = time.monotonic()
        turn.wait()
        assert 0.95 < time.monotonic() - start < 6.0
        start = time.monotonic()
        turn.wait()  # the same hold: given up on already, no second bound
        assert time.monotonic() - start < 0.5
        assert hold.engine_stats()[2] == 1
    with hold.hold():  # a new hold is waited for again
        start = time.monotonic()
        turn.wait()
        assert time.monotonic() - start > 0.95
    assert hold.engine_stats()[0] == 2 and hold.engine_stats()[2] == 2  # the skipped wait is no wait


def test_alternate_holds_for_first_audio_or_a_t3_batch_only():
    batch = [1]
    hold = EngineHold(alternate=True, t3_batch=lambda: batch[0])
    try:
        with hold.hold():  # a later piece while T3 decodes one request: they overlap
            assert hold.holders == 0
        with hold.hold(first_audio=True):  # a stream's first audio: always held
            assert hold.holders == 1
        batch[0] = 2
        with hold.hold():  # T3 decodes a batch: held
            assert hold.holders == 1
        assert hold.holders == 0
    finally:
        hold.close()


def test_overlap_never_holds_and_a_closed_hold_is_inert():
    hold = EngineHold(alternate=False)
    turn = EngineTurn(hold.path)
    with hold.hold():
        assert hold.holders == 0
        start = time.monotonic()
        turn.wait()
        assert time.monotonic() - start < 1.0  # a hold would cost the 10 s bound
    hold.alternate = True
    hold.close()
    assert not os.path.exists(hold.path)
    with hold.hold():  # a caller still vocoding while the model closes: nothing to hold, no error
        pass


def test_holds_from_many_threads_balance(hold):
    def work():
        for _ in range(200):
            with hold.hold():
                with hold.hold():
                    pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert hold.holders == 0


def test_the_default_alternates_only_when_the_threads_oversubscribe_the_cores():
    assert default_cpu_sharing(2, 2, 2) == "alternate"  # every core each: the default
    assert default_cpu_sharing(1, 1, 2) == "overlap"  # split by the user
    assert default_cpu_sharing(8, 8, 16) == "overlap"
    assert default_cpu_sharing(16, 1, 16) == "alternate"


@pytest.mark.parametrize("bad", ["alternating", "", "ALTERNATE", 1, True])
def test_bad_modes_are_refused(bad, tiny_model_dir):
    with pytest.raises(ValueError, match="cpu_sharing must be one of 'alternate', 'overlap'"):
        CpuThreads(sharing=bad)
    from vllm_chatterbox.tts import ChatterboxTTS

    with pytest.raises(ValueError, match="cpu_sharing must be one of"):  # before any engine starts
        ChatterboxTTS.from_dir(tiny_model_dir, cpu_sharing=bad)


def test_the_cli_refuses_a_bad_mode(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["speak", "Hi.", "-o", "x.wav", "--cpu-sharing", "sometimes"])
    assert exit_info.value.code == 2
    assert "argument --cpu-sharing: invalid choice: 'sometimes'" in capsys.readouterr().err


# --- the session Turbo engine -----------------------------------------------------------------


@pytest.fixture
def alternating(turbo_tts):
    """The session engine in alternate mode (its default on a 2-core machine; set here so that
    OMP_NUM_THREADS or more cores cannot change what is tested), restored after the test."""
    engine_hold = turbo_tts.t3_engine.cpu_hold
    if engine_hold is None:
        pytest.skip("T3 does not run on the CPU here: nothing to share")
    mode, bound = turbo_tts.cpu_sharing, engine_hold.max_wait_s
    turbo_tts.cpu_sharing = "alternate"
    yield engine_hold
    turbo_tts.cpu_sharing = mode
    engine_hold.max_wait_s = bound


def _greedy_request(tts, text: str):
    return tts.prepare_t3_requests(text, temperature=0, max_new_tokens=24)


def _tokens_after(batch: T3Batch, timeout: float) -> list:
    return batch.next_finished(timeout=timeout)


def test_a_held_engine_makes_no_progress_and_then_the_same_tokens(turbo_tts, alternating):
    text = "Held while S3Gen vocodes."
    expected = turbo_tts.t3_engine.generate(_greedy_request(turbo_tts, text))[0].token_ids
    arrived: list[int] = []
    with alternating.hold(first_audio=True):
        future = turbo_tts.t3_engine.submit(_greedy_request(turbo_tts, text)[0],
                                            lambda event: event[0] == "tokens" and arrived.extend(event[1]))
        time.sleep(1.0)
        assert arrived == [], "T3 decoded while S3Gen held the cores"
        assert not future.done()
    future.result(timeout=60)
    deadline = time.monotonic() + 5
    while len(arrived) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert arrived == expected


def test_a_hold_that_never_ends_costs_the_engine_one_bound(turbo_tts, alternating):
    alternating.max_wait_s = 0.5
    gave_up = alternating.engine_stats()[2]
    with alternating.hold(first_audio=True):
        start = time.monotonic()
        with T3Batch(turbo_tts.t3_engine, _greedy_request(turbo_tts, "Nobody lets go.")) as batch:
            results = batch.next_finished(timeout=60)
        elapsed = time.monotonic() - start
        assert results and len(results[0][1].token_ids) == 24
        assert alternating.engine_stats()[2] == gave_up + 1
    assert elapsed > 0.45  # it did wait for the bound, once


def test_overlap_mode_never_holds_the_engine(turbo_tts, alternating):
    turbo_tts.cpu_sharing = "overlap"
    waits = alternating.engine_stats()[0]
    with alternating.hold(first_audio=True):
        assert alternating.holders == 0
        with T3Batch(turbo_tts.t3_engine, _greedy_request(turbo_tts, "Both at once.")) as batch:
            results = batch.next_finished(timeout=60)
        assert results and len(results[0][1].token_ids) == 24
    assert alternating.engine_stats()[0] == waits


def test_a_stream_holds_the_engine_while_it_vocodes_and_sounds_the_same(turbo_tts, alternating):
    options = dict(seed=3, max_new_tokens=70, watermark=False)
    assert not os.path.exists(alternating.path), "the shared block's name outlived the engine's start"
    waits = alternating.engine_stats()[0]
    alternate = np.concatenate(list(turbo_tts.stream("The vocoder and T3 take turns here.", **options)))
    assert alternating.engine_stats()[0] > waits, "no vocoder call held the engine during the stream"
    turbo_tts.cpu_sharing = "overlap"
    overlap = np.concatenate(list(turbo_tts.stream("The vocoder and T3 take turns here.", **options)))
    np.testing.assert_array_equal(alternate, overlap)


def test_a_later_piece_holds_the_engine_only_while_it_decodes_a_batch(turbo_tts, alternating):
    engine = turbo_tts.t3_engine

    def in_flight(count: int) -> None:
        deadline = time.monotonic() + 30
        while engine.unfinished_requests() != count:
            assert time.monotonic() < deadline, f"{engine.unfinished_requests()} requests in flight, not {count}"
            time.sleep(0.005)

    requests = turbo_tts.prepare_t3_requests(["One of two.", "Two of two."], max_new_tokens=1000)
    with T3Batch(engine, requests[:1]):
        in_flight(1)
        with alternating.hold():
            assert alternating.holders == 0, "a lone T3 request was held for a later piece"
    in_flight(0)
    with T3Batch(engine, requests):
        in_flight(2)
        with alternating.hold():
            assert alternating.holders == 1, "T3 decoding a batch was not held"
    in_flight(0)
