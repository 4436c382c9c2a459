"""Typed configuration overrides and model-directory / hub resolution errors."""

import json

import pytest

from vllm_chatterbox.config import CONFIG_FILE_NAME, ChatterboxConfig, tiny_config
from vllm_chatterbox.model_files import ENGLISH_FILES, ModelFiles, download


def test_defaults_are_released_values_and_override_file_round_trips(tmp_path):
    assert ChatterboxConfig.for_model_dir(tmp_path) == ChatterboxConfig()
    tiny_config().save(tmp_path)
    assert ChatterboxConfig.for_model_dir(tmp_path) == tiny_config()


def test_partial_override_keeps_other_defaults(tmp_path):
    (tmp_path / CONFIG_FILE_NAME).write_text(json.dumps({"t3": {"num_layers": 4}}))
    cfg = ChatterboxConfig.for_model_dir(tmp_path)
    assert cfg.t3.num_layers == 4 and cfg.t3.hidden_size == 1024


@pytest.mark.parametrize("content,message", [
    ('{"t3": {"num_layer": 4}}', "unknown field"),
    ('{"t3": 4}', "expected an object"),
    ("{not json", "not valid JSON"),
])
def test_bad_override_file_is_a_clear_error(tmp_path, content, message):
    (tmp_path / CONFIG_FILE_NAME).write_text(content)
    with pytest.raises(ValueError, match=message):
        ChatterboxConfig.for_model_dir(tmp_path)


def test_missing_files_are_named(tmp_path):
    (tmp_path / "t3_cfg.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="missing s3gen.safetensors, ve.safetensors, tokenizer.json, conds.pt"):
        ModelFiles.from_dir(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        ModelFiles.from_dir(tmp_path / "nope")
    for name in ENGLISH_FILES:
        (tmp_path / name).write_bytes(b"")
    assert ModelFiles.from_dir(tmp_path).t3 == tmp_path / "t3_cfg.safetensors"


def test_hub_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="(?s)could not download 'ResembleAI/chatterbox'.*from_dir"):
        download("ResembleAI/chatterbox")


def test_from_files_takes_model_files_only(tmp_path):
    from vllm_chatterbox.tts import ChatterboxTTS

    with pytest.raises(ValueError, match="files must be a ModelFiles"):
        ChatterboxTTS.from_files(str(tmp_path))


@pytest.mark.parametrize("name", ["t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "conds.pt"])
def test_damaged_weights_are_named_before_anything_loads(tmp_path, name, monkeypatch):
    """Headers and archive directories are read up front: a truncated file is a ValueError
    naming it, before any loading (and before vLLM)."""
    from vllm_chatterbox.demo_model import make_test_model
    from vllm_chatterbox.tts import ChatterboxTTS

    directory = make_test_model(tmp_path / "m", "tiny")
    data = (directory / name).read_bytes()
    (directory / name).write_bytes(data[: len(data) - 100])
    monkeypatch.setattr("vllm_chatterbox.tts.T3Engine", lambda *a, **k: pytest.fail("engine started"))
    with pytest.raises(ValueError, match=f"{name}: (not a valid safetensors file|damaged or incomplete)"):
        ChatterboxTTS.from_dir(directory)


def test_hub_repo_ids_and_local_paths():
    from vllm_chatterbox.model_files import is_hub_repo_id

    assert is_hub_repo_id("ResembleAI/chatterbox") and is_hub_repo_id("me/my-model.v2")
    for path in ("/models/chatterbox", "./chatterbox", "../a/b", "~/models", "chatterbox", "a/b/c", "a\\b"):
        assert not is_hub_repo_id(path), path
