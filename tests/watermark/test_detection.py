"""Detection (``detect``, the original's ``get_watermark``): marked speech is found, unmarked
speech is not, also after the server's mp3 / opus / aac encoding; bad input is a ValueError.

Measured on the shared espeak-ng clips (2026-12-05; the verdict is the original's fixed
threshold, 0.5, never tuned here): marked 1.0000 each; unmarked 0.0002-0.0158. Through the
server's encoders at their FFmpeg defaults (mp3 ~32 kb/s at 24 kHz, opus ~75-105 kb/s decoded at
48 kHz, aac ~70 kb/s), marked 0.96-1.0 and unmarked 0.0000-0.0266. Known limit, the original's
too (equal values): low pure tones read as marked when they are not (100 Hz sine 0.9966,
191 Hz 0.9630; 440 Hz 0.0754), so no test here claims that every unmarked signal reads low.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile

from tests.paths import FIXTURE_AUDIO
from vllm_chatterbox.watermark import detect, is_marked

RATE = 24000


def speech_clips() -> dict[str, np.ndarray]:
    builtin, _ = soundfile.read(str(FIXTURE_AUDIO / "builtin_voice_src_24k.wav"), dtype="float32")
    voice2, _ = soundfile.read(str(FIXTURE_AUDIO / "voice2_24k.wav"), dtype="float32")
    return {"builtin": builtin, "voice2": voice2,
            "both": np.concatenate([builtin, np.zeros(RATE // 3, np.float32), voice2])}


CLIPS = speech_clips()


@pytest.fixture(scope="module")
def marked_clips(watermarker):
    return {name: watermarker.mark(clip, RATE) for name, clip in CLIPS.items()}


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_marked_speech_is_detected_and_unmarked_is_not(marked_clips, name):
    assert is_marked(detect(marked_clips[name], RATE))
    assert not is_marked(detect(CLIPS[name], RATE))


def test_marked_noise_is_detected(watermarker):
    noise = np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32) * 0.1
    assert not is_marked(detect(noise, RATE))
    assert is_marked(detect(watermarker.mark(noise, RATE), RATE))


def _through_the_server_encoder(samples: np.ndarray, response_format: str, tmp_path) -> tuple[np.ndarray, int]:
    from vllm_chatterbox.server.encoding import AudioEncoder
    from vllm_chatterbox.watermark.files import read_audio_file

    encoder = AudioEncoder(response_format)
    path = tmp_path / f"audio.{response_format}"
    path.write_bytes(encoder.encode(samples) + encoder.finish())
    return read_audio_file(path)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac"])
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_the_mark_survives_the_servers_lossy_formats(marked_clips, response_format, name, tmp_path):
    decoded, rate = _through_the_server_encoder(marked_clips[name], response_format, tmp_path)
    assert is_marked(detect(decoded, rate))
    decoded, rate = _through_the_server_encoder(CLIPS[name], response_format, tmp_path)
    assert not is_marked(detect(decoded, rate))


def test_long_audio_is_marked_and_detected_in_windows(watermarker):
    """Past 60 s, marking and detection work in windows (bounded memory): on speech with a
    noise floor the windowed marking equals the whole waveform's to float rounding (measured
    max |d| 4.8e-7), and it is detected."""
    clip = np.concatenate([CLIPS["both"], np.zeros(RATE // 2, np.float32)])
    long = np.tile(clip, 9)[:75 * RATE]
    long += np.random.default_rng(2).standard_normal(long.size).astype(np.float32) * 1e-5
    marked = watermarker.mark(long, RATE)
    whole = watermarker.mark_whole(long, RATE)
    assert marked.shape == whole.shape == (240 * (long.size // 240),)
    assert np.abs(marked - whole).max() <= 2e-6
    assert is_marked(detect(marked, RATE))


def test_digital_silence_reads_as_unmarked():
    """The original returns NaN here (a mean over no loud frame); silence carries no mark."""
    assert detect(np.zeros(RATE, np.float32), RATE) == 0.0


def test_marking_from_many_threads_equals_marking_alone(watermarker):
    clips = [CLIPS["builtin"], CLIPS["voice2"], CLIPS["both"], CLIPS["builtin"][::-1].copy()]
    alone = [watermarker.mark(clip, RATE) for clip in clips]
    together: list[np.ndarray | None] = [None] * len(clips)

    def mark(index: int) -> None:
        together[index] = watermarker.mark(clips[index], RATE)

    threads = [threading.Thread(target=mark, args=(i,)) for i in range(len(clips))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("audio,rate,message", [
    (np.zeros(100, np.float32), RATE, "too short to detect a watermark: 100 samples"),
    (np.zeros(RATE, np.int16), RATE, "float samples"),
    (np.zeros((2, RATE), np.float32), RATE, "1-D"),
    (np.full(RATE, np.nan, np.float32), RATE, "non-finite"),
    (np.zeros(RATE, np.float32), 24000.5, "integer number of Hz"),
    (np.zeros(RATE, np.float32), 100, "outside"),
])
def test_bad_input_is_a_clear_error(audio, rate, message):
    with pytest.raises(ValueError, match=message):
        detect(audio, rate)


def test_too_short_to_mark_is_returned_unmarked(watermarker, caplog):
    short = np.random.default_rng(1).standard_normal(500).astype(np.float32) * 0.1
    np.testing.assert_array_equal(watermarker.mark(short, RATE), short)
    assert "too short to carry the watermark" in caplog.text
    assert watermarker.mark(np.zeros(0, np.float32), RATE).size == 0


def test_detect_file_takes_a_path_or_the_bytes_a_server_receives(marked_clips, tmp_path):
    from vllm_chatterbox.watermark import detect_file

    path = tmp_path / "marked.flac"
    soundfile.write(path, marked_clips["voice2"], RATE)
    for source in (path, path.read_bytes()):
        detection = detect_file(source)
        assert detection.marked and detection.confidence > 0.5 and detection.sample_rate == RATE
        assert detection.seconds == pytest.approx(marked_clips["voice2"].size / RATE)
    with pytest.raises(ValueError, match="audio bytes: not a readable audio file"):
        detect_file(b"certainly not audio" * 10)


@pytest.mark.parametrize("response_format", ["wav", "mp3"])
def test_detect_file_refuses_audio_over_max_seconds(response_format, tmp_path):
    """wav: refused from its header, before decoding; mp3 (decoded by FFmpeg when libsndfile
    refuses the container, else by libsndfile): refused as the decoding passes the limit."""
    from vllm_chatterbox.server.encoding import AudioEncoder
    from vllm_chatterbox.watermark import detect_file

    noise = np.random.default_rng(1).standard_normal(3 * RATE).astype(np.float32) * 0.1
    encoder = AudioEncoder(response_format)
    data = encoder.encode(noise) + encoder.finish()
    if response_format == "wav":  # the server's streamed wav has no length; write one that has
        path = tmp_path / "noise.wav"
        soundfile.write(path, noise, RATE, subtype="PCM_16")
        data = path.read_bytes()
    assert detect_file(data, max_seconds=3.5).seconds == pytest.approx(3.0, abs=0.1)
    with pytest.raises(ValueError, match=r"audio bytes: 3\.\d s of audio or more; at most 2\.0 s are read"):
        detect_file(data, max_seconds=2.0)
