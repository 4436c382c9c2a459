"""The multilingual file layout: recognised by its contents, T3 version choice, clear errors (no engine)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from vllm_chatterbox.config import CONFIG_FILE_NAME
from vllm_chatterbox.model_files import (ENGLISH_FILES, MULTILINGUAL_FILES, MULTILINGUAL_T3_FILES, ModelFiles,
                                         download)
from vllm_chatterbox.demo_model import make_test_model
from vllm_chatterbox.tts import ChatterboxTTS
from vllm_chatterbox.variants import model_config

V2, V3 = MULTILINGUAL_T3_FILES["v2"], MULTILINGUAL_T3_FILES["v3"]


def _touch(directory, *names):
    for name in names:
        (directory / name).write_bytes(b"")
    return directory


def test_multilingual_layout_is_recognised_and_v2_is_the_default(tmp_path):
    _touch(tmp_path, V2, V3, *MULTILINGUAL_FILES)
    files = ModelFiles.from_dir(tmp_path)
    assert files.multilingual
    assert (files.t3.name, files.s3gen.name, files.voice_encoder.name, files.tokenizer.name) == \
        (V2, "s3gen.pt", "ve.pt", "grapheme_mtl_merged_expanded_v1.json")
    assert ModelFiles.from_dir(tmp_path, version="v3").t3.name == V3


def test_a_full_snapshot_is_english_unless_asked(tmp_path):
    """The hub repository holds both layouts; the English one wins unless multilingual is asked for."""
    _touch(tmp_path, *ENGLISH_FILES, V2, *MULTILINGUAL_FILES)
    assert not ModelFiles.from_dir(tmp_path).multilingual
    assert ModelFiles.from_dir(tmp_path, multilingual=True).t3.name == V2
    assert ModelFiles.from_dir(tmp_path, version="v2").multilingual


@pytest.mark.parametrize("present,kwargs,message", [
    ((V2, *MULTILINGUAL_FILES), {"version": "v3"},
     r"t3_mtl23ls_v3.safetensors \(version 'v3'\) not found; it has version v2"),
    ((V3, *MULTILINGUAL_FILES), {}, r"t3_mtl23ls_v2.safetensors \(version 'v2'\) not found; it has version v3"),
    ((V2, *MULTILINGUAL_FILES), {"version": "v9"}, "unknown multilingual T3 version 'v9'; choose one of v2, v3"),
    ((V2, "ve.pt", "conds.pt"), {}, "not a multilingual Chatterbox model directory: missing s3gen.pt, "
                                   "grapheme_mtl_merged_expanded_v1.json"),
    (ENGLISH_FILES, {"multilingual": True}, "expected one of t3_mtl23ls_v2.safetensors, t3_mtl23ls_v3.safetensors"),
    ((V2, *MULTILINGUAL_FILES), {"multilingual": False, "version": "v2"}, "applies to the multilingual model only"),
    ((V2, *MULTILINGUAL_FILES), {"multilingual": False}, "missing t3_cfg.safetensors"),
])
def test_layout_errors_are_clear(tmp_path, present, kwargs, message):
    _touch(tmp_path, *present)
    with pytest.raises(ValueError, match=message):
        ModelFiles.from_dir(tmp_path, **kwargs)


def test_download_checks_the_version_and_names_the_multilingual_files(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="multilingual model only"):
        download("ResembleAI/chatterbox", version="v3")
    with pytest.raises(ValueError, match="unknown multilingual T3 version"):
        download("ResembleAI/chatterbox", multilingual=True, version="v4")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="t3_mtl23ls_v3.safetensors, s3gen.pt, ve.pt"):
        download("ResembleAI/chatterbox", multilingual=True, version="v3")


@pytest.fixture(scope="module")
def model_pair(tmp_path_factory):
    english = make_test_model(tmp_path_factory.mktemp("en"), "tiny", seed=5)
    multilingual = make_test_model(tmp_path_factory.mktemp("mtl"), "tiny", seed=5, multilingual=True)
    return english, multilingual


def test_test_model_writes_the_multilingual_layout(model_pair):
    english, multilingual = model_pair
    files = ModelFiles.from_dir(multilingual)
    assert files.multilingual and files.t3.name == V2
    with safe_open(str(files.t3), "pt") as m, safe_open(str(english / "t3_cfg.safetensors"), "pt") as e:
        assert set(m.keys()) == set(e.keys())
        for key in m.keys():
            shape = list(m.get_slice(key).get_shape())
            if key in ("text_emb.weight", "text_head.weight"):
                assert shape == [2454, 64], key
            else:
                assert shape == list(e.get_slice(key).get_shape()), key
    # ve.pt / s3gen.pt: plain state dicts holding the English files' tensors.
    for pt, st in (("ve.pt", "ve.safetensors"), ("s3gen.pt", "s3gen.safetensors")):
        state = torch.load(multilingual / pt, weights_only=True)
        with safe_open(str(english / st), "pt") as f:
            assert set(state) == set(f.keys())
            assert all(torch.equal(state[k], f.get_tensor(k)) for k in f.keys())
    assert json.loads((multilingual / CONFIG_FILE_NAME).read_text())["t3"]["text_vocab_size"] == 2454


def test_text_vocabulary_comes_from_the_checkpoint(model_pair, tmp_path):
    english, multilingual = model_pair
    # Without an override file (as released) the multilingual vocabulary is read from the T3 file.
    config_data = json.loads((multilingual / CONFIG_FILE_NAME).read_text())
    del config_data["t3"]["text_vocab_size"]
    for name in (V2, *MULTILINGUAL_FILES):
        (tmp_path / name).symlink_to(multilingual / name)
    (tmp_path / CONFIG_FILE_NAME).write_text(json.dumps(config_data))
    assert model_config(ModelFiles.from_dir(tmp_path)).t3.text_vocab_size == 2454
    # An English T3 under the multilingual name is refused before any engine starts.
    (tmp_path / V2).unlink()
    (tmp_path / V2).symlink_to(english / "t3_cfg.safetensors")
    with pytest.raises(ValueError, match="text_emb.weight has 704 rows.*multilingual T3"):
        ChatterboxTTS.from_dir(tmp_path)


def test_pt_weights_load_into_s3gen_and_the_voice_builder(model_pair):
    from vllm_chatterbox.config import ChatterboxConfig
    from vllm_chatterbox.s3gen.model import S3Gen
    from vllm_chatterbox.voice.builder import VoiceBuilder

    _, multilingual = model_pair
    config = ChatterboxConfig.for_model_dir(multilingual)
    assert isinstance(S3Gen.from_file(multilingual / "s3gen.pt", config), S3Gen)
    assert isinstance(VoiceBuilder.from_files(multilingual / "ve.pt", multilingual / "s3gen.pt", config), VoiceBuilder)
