"""Output paths are checked before any work; files appear complete or not at all."""

import os

import numpy as np
import pytest
import soundfile

from vllm_chatterbox.outputs import AUDIO_FORMATS, atomic_output, check_output_path, write_audio

AUDIO = tuple(AUDIO_FORMATS)


def test_good_paths(tmp_path):
    assert check_output_path(tmp_path / "a.wav", AUDIO) == tmp_path / "a.wav"
    assert check_output_path(tmp_path / "new" / "deeper" / "a.FLAC", AUDIO).suffix == ".FLAC"


@pytest.mark.parametrize("name,message", [
    ("a", "has no extension"), ("a.txt", "unsupported extension '.txt'"), ("a.mp3", "unsupported extension"),
])
def test_bad_names(tmp_path, name, message):
    with pytest.raises(ValueError, match=message):
        check_output_path(tmp_path / name, AUDIO)


def test_directory_and_file_in_the_way(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        check_output_path(tmp_path, AUDIO)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file is not a directory"):
        check_output_path(tmp_path / "file" / "a.wav", AUDIO)


def test_unwritable_directory(tmp_path, monkeypatch):
    """Checked with os.access (as root every directory is writable, so it is simulated)."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match="is not writable"):
        check_output_path(tmp_path / "a.wav", AUDIO)


def test_atomic_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    with atomic_output(target) as temporary:
        assert temporary.parent == tmp_path and temporary != target
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]


def test_write_audio_formats(tmp_path):
    wav = np.linspace(-0.5, 0.5, 2400, dtype=np.float32)
    for name, fmt in (("a.wav", "WAV"), ("a.flac", "FLAC")):
        write_audio(tmp_path / name, wav, 24000)
        info = soundfile.info(str(tmp_path / name))
        assert (info.format, info.subtype, info.samplerate, info.frames) == (fmt, "PCM_16", 24000, 2400)
