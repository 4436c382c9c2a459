"""``Voice``: every voice made, loaded or saved is checked; files are written atomically."""

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch

from tests.paths import FIXTURE_AUDIO, FIXTURE_CKPT
from vllm_chatterbox.config import tiny_config
from vllm_chatterbox.voice.voice import MAX_PROMPT_TOKENS, Voice


@pytest.fixture(scope="module")
def builtin() -> Voice:
    return Voice.load(FIXTURE_CKPT / "conds.pt")


def conds(builtin, part, key, value):
    data = builtin.to_conds_dict()
    data[part][key] = value
    return data


NAN = float("nan")


@pytest.mark.parametrize("part,key,make,message", [
    ("t3", "speaker_emb", lambda v: torch.full_like(v.speaker_emb, NAN), "speaker_emb holds non-finite"),
    ("gen", "prompt_feat", lambda v: v.prompt_feat.clone().index_fill_(1, torch.tensor([3]), NAN),
     "prompt_feat holds non-finite"),
    ("gen", "embedding", lambda v: v.embedding * float("inf"), "embedding holds non-finite"),
    ("t3", "cond_prompt_speech_tokens", lambda v: v.cond_prompt_speech_tokens - 2 ** 62,
     "cond_prompt_speech_tokens holds ids outside the speech tokens"),
    ("gen", "prompt_token", lambda v: v.prompt_token + 6561, "prompt_token holds ids outside"),
    ("gen", "prompt_token", lambda v: v.prompt_token.float(), "gen.prompt_token must hold integer token ids"),
    ("t3", "speaker_emb", lambda v: "a speaker", "t3.speaker_emb must be a tensor, got str"),
    ("gen", "embedding", lambda v: ["0.1"] * 192, "gen.embedding must be a tensor, got list"),
    ("gen", "prompt_feat", lambda v: v.prompt_feat[0, :, :1].T.reshape(1, 1, 1, -1), "gen.prompt_feat must be"),
    ("gen", "prompt_token", lambda v: torch.zeros(1, 0, dtype=torch.int64), "gen.prompt_token is empty"),
    ("t3", "emotion_adv", lambda v: torch.tensor([[[3.0]]]), r"exaggeration \(t3.emotion_adv\) must be in"),
    ("t3", "emotion_adv", lambda v: torch.tensor([[[NAN]]]), "must be finite"),
    ("t3", "emotion_adv", lambda v: "high", "t3.emotion_adv must be a tensor"),
    ("gen", "prompt_token", lambda v: torch.zeros(1, MAX_PROMPT_TOKENS + 1, dtype=torch.int64), "at most"),
])
def test_bad_conds_are_rejected_naming_the_field(builtin, part, key, make, message):
    with pytest.raises(ValueError, match=message):
        Voice.from_conds_dict(conds(builtin, part, key, make(builtin)))


def test_bad_voice_file_is_rejected_at_load(builtin, tmp_path):
    path = tmp_path / "nan.pt"
    torch.save(conds(builtin, "gen", "prompt_feat", torch.full_like(builtin.prompt_feat, NAN)), path)
    with pytest.raises(ValueError, match="nan.pt: voice prompt_feat holds non-finite"):
        Voice.load(path)


def test_constructed_voices_are_checked(builtin):
    with pytest.raises(ValueError, match="voice speaker_emb must be torch.float32, got torch.float64"):
        dataclasses.replace(builtin, speaker_emb=builtin.speaker_emb.double())
    with pytest.raises(ValueError, match="voice prompt_token must have 2 dimensions"):
        dataclasses.replace(builtin, prompt_token=builtin.prompt_token[0])
    with pytest.raises(ValueError, match=r"exaggeration must be in \[0.0, 2.0\]"):
        builtin.with_exaggeration(2.5)


def test_dimensions_are_checked_against_the_model(builtin):
    config = tiny_config()
    assert builtin.check_dims(config) is builtin
    short = dataclasses.replace(builtin, speaker_emb=builtin.speaker_emb[:, :100])
    with pytest.raises(ValueError, match=r"voice speaker_emb must have shape \(1, 256\), got \(1, 100\)"):
        short.check_dims(config)
    with pytest.raises(ValueError, match=r"prompt_feat must be \(1, frames, 80\)"):
        dataclasses.replace(builtin, prompt_feat=builtin.prompt_feat[:, :, :40]).check_dims(config)


def test_numpy_arrays_in_a_conds_dict_are_accepted(builtin):
    data = builtin.to_conds_dict()
    data["t3"]["speaker_emb"] = data["t3"]["speaker_emb"].numpy()
    data["gen"]["prompt_token"] = data["gen"]["prompt_token"].numpy().astype(np.int32)
    voice = Voice.from_conds_dict(data)
    torch.testing.assert_close(voice.speaker_emb, builtin.speaker_emb, rtol=0, atol=0)
    assert voice.prompt_token.dtype == torch.int64


class RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickled_objects_are_refused_without_suggesting_weights_only_false(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"t3": RunsCode(), "gen": {}}, path)
    with pytest.raises(ValueError) as info:
        Voice.load(path)
    message = str(info.value)
    assert "refused" in message and "evil.pt" in message
    assert "weights_only" not in message and "\n" not in message


def test_wav_renamed_pt_is_a_clear_error(tmp_path):
    path = tmp_path / "voice.pt"
    shutil.copyfile(FIXTURE_AUDIO / "voice2_24k.wav", path)
    with pytest.raises(ValueError, match="voice.pt: this is an audio file, not a conds.pt voice file"):
        Voice.load(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, None])
def test_damaged_voice_files_are_clear_errors(tmp_path, builtin, content):
    path = tmp_path / "v.pt"
    if content is None:  # a truncated torch.save archive
        builtin.save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="v.pt: (not a conds.pt voice file|damaged or incomplete)"):
        Voice.load(path)


def test_save_round_trip_and_mode(tmp_path, builtin):
    path = tmp_path / "v.pt"
    builtin.with_exaggeration(0.9).save(path)
    loaded = Voice.load(path)
    assert loaded.exaggeration == pytest.approx(0.9)
    torch.testing.assert_close(loaded.prompt_feat, builtin.prompt_feat, rtol=0, atol=0)
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.pt"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_save_leaves_no_partial_file(tmp_path, builtin, monkeypatch):
    """A full disk mid-write: the old voice stays intact and no truncated file appears."""
    old = tmp_path / "old.pt"
    builtin.save(old)
    before = old.read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    for target in (old, tmp_path / "new.pt"):
        with pytest.raises(OSError, match="No space left"):
            builtin.save(target)
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]
