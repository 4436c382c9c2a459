"""Output paths are checked before any work; files appear complete or not at all."""

import errno
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


# ---------------------------------------------------------------- real storage faults (a small tmpfs)

def _tone(seconds: float) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(24000 * seconds)) / 10)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_full_disk_is_a_clear_error_and_leaves_the_old_file(tmp_path, suffix):
    """libsndfile reports a full disk as "System error" without an errno: the error says what
    happened and names the file; the previous file stays whole and no temporary file is left."""
    from tests.storage import fill, small_tmpfs

    with small_tmpfs(tmp_path / "disk") as disk:
        out = disk / f"out{suffix}"
        write_audio(out, _tone(0.1), 24000)
        before = out.read_bytes()
        filler = fill(disk)
        for target in (out, disk / f"new{suffix}"):
            with pytest.raises(OSError, match=f"cannot write {target}: No space left on device") as caught:
                write_audio(target, _tone(2.0), 24000)
            assert caught.value.errno == errno.ENOSPC
        assert out.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == sorted([out.name, filler.name])
        filler.unlink()
        write_audio(out, _tone(2.0), 24000)  # room again: written whole
        assert soundfile.info(str(out)).frames == 48000


def test_full_disk_while_streaming_pieces_leaves_nothing(tmp_path):
    """The CLI's --stream writer: pieces written as they come, the disk fills half way."""
    from tests.storage import fill, small_tmpfs
    from vllm_chatterbox.cli import _write_streaming

    with small_tmpfs(tmp_path / "disk") as disk:
        filler = fill(disk)
        filler.write_bytes(filler.read_bytes()[:-64 * 1024])  # 64 KiB free: the stream outgrows it
        out = disk / "stream.wav"
        with pytest.raises(OSError, match=f"cannot write {out}: No space left on device"):
            _write_streaming((_tone(0.5) for _ in range(8)), out)
        assert sorted(p.name for p in disk.iterdir()) == [filler.name]


def test_read_only_file_system(tmp_path):
    """Refused by the path check before any work; and if the file system turns read-only after
    it, the write says so."""
    from tests.storage import remount_read_only, small_tmpfs

    with small_tmpfs(tmp_path / "disk") as disk:
        remount_read_only(disk)
        with pytest.raises(ValueError, match="is not writable"):
            check_output_path(disk / "out.wav", AUDIO)
        with pytest.raises(OSError, match=f"cannot write {disk / 'out.wav'}: Read-only file system"):
            with atomic_output(disk / "out.wav"):
                pytest.fail("a temporary file was created on a read-only file system")
        assert list(disk.iterdir()) == []


def test_other_write_errors_are_passed_on_unchanged(tmp_path):
    with pytest.raises(KeyError, match="not storage"):
        with atomic_output(tmp_path / "out.wav"):
            raise KeyError("not storage")
    with pytest.raises(RuntimeError, match="a library failed"):  # plenty of space: not taken for a full disk
        with atomic_output(tmp_path / "out.wav"):
            raise RuntimeError("a library failed")
    assert list(tmp_path.iterdir()) == []
