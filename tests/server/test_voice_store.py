"""The voice store as several servers share it (Ray Serve replicas on one directory): each store
reads the directory on every look-up, so a voice saved, deleted or stored again by one is what the
others serve next. No engine: the voices are the tiny model's built-in conds.pt, varied."""

import dataclasses
import os

import pytest

from vllm_chatterbox.server.voices import VoiceExists, VoiceStore
from vllm_chatterbox.voice.voice import Voice


@pytest.fixture(scope="module")
def builtin_voice(model_dir) -> Voice:
    return Voice.load(model_dir / "conds.pt")


def test_stores_on_one_directory_see_each_others_voices(tmp_path, builtin_voice):
    first, second = VoiceStore(tmp_path), VoiceStore(tmp_path)
    first.save("shared", dataclasses.replace(builtin_voice, exaggeration=0.3))
    assert second.names() == ["shared"]
    assert second.load("shared").exaggeration == pytest.approx(0.3)
    with pytest.raises(VoiceExists):
        second.save("shared", builtin_voice)
    assert first.load("shared").exaggeration == pytest.approx(0.3)

    assert second.delete("shared")
    assert first.load("shared") is None and first.names() == []
    assert not first.delete("shared")
    later = VoiceStore(tmp_path)  # a replica started afterwards sees what is stored, nothing else
    assert later.names() == []


def test_a_voice_stored_again_elsewhere_is_not_served_stale(tmp_path, builtin_voice):
    """Replica A has the voice cached; replica B deletes it and stores another under the same name
    with the same mtime (coarse timestamps on a shared filesystem) and size: A serves the new one."""
    reader, writer = VoiceStore(tmp_path), VoiceStore(tmp_path)
    writer.save("narrator", dataclasses.replace(builtin_voice, exaggeration=0.3))
    assert reader.load("narrator").exaggeration == pytest.approx(0.3)
    path = tmp_path / "narrator.pt"
    old = path.stat()

    writer.delete("narrator")
    writer.save("narrator", dataclasses.replace(builtin_voice, exaggeration=0.9))
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert path.stat().st_size == old.st_size and path.stat().st_mtime_ns == old.st_mtime_ns
    assert reader.load("narrator").exaggeration == pytest.approx(0.9)
