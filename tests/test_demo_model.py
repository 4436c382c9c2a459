"""The random-weight generator writes exactly the official layout: same files, keys, shapes."""

import json

import pytest
import torch
from safetensors import safe_open

from tests.paths import FIXTURE_CKPT
from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox import demo_model
from vllm_chatterbox.demo_model import make_test_model
from vllm_chatterbox.model_files import ModelFiles
from vllm_chatterbox.voice.voice import Voice


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("tiny"), "tiny", seed=3)


def _shapes(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.mark.parametrize("name", ["t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors"])
def test_tiny_model_has_the_original_keys_and_shapes(tiny_model, name):
    """The fixture was written by the original implementation at the same reduced sizes."""
    expected = {k: v["shape"] for k, v in json.loads((FIXTURE_CKPT / "dims.json").read_text())
                ["state_dict_shapes"][name].items()}
    assert _shapes(tiny_model / name) == expected


def test_tiny_model_loads_through_the_normal_loader(tiny_model):
    files = ModelFiles.from_dir(tiny_model)
    config = ChatterboxConfig.for_model_dir(tiny_model)
    assert config.t3.hidden_size == 64
    assert (tiny_model / "tokenizer.json").read_bytes() == (FIXTURE_CKPT / "tokenizer.json").read_bytes()
    voice = Voice.load(files.conds)
    raw = torch.load(files.conds, weights_only=True)
    reference = torch.load(FIXTURE_CKPT / "conds.pt", weights_only=True)
    assert {k: sorted(v) for k, v in raw.items()} == {k: sorted(v) for k, v in reference.items()}
    assert voice.prompt_feat.shape[1] == 2 * voice.prompt_token.shape[1]


def test_same_seed_same_weights(tmp_path, tiny_model):
    again = make_test_model(tmp_path, "tiny", seed=3)
    for name in ("t3_cfg.safetensors", "ve.safetensors"):
        with safe_open(str(again / name), "pt") as a, safe_open(str(tiny_model / name), "pt") as b:
            for key in a.keys():
                assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


def test_unknown_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown test-model size"):
        make_test_model(tmp_path, "huge")


def test_full_size_config_is_the_released_model():
    cfg = ChatterboxConfig()
    assert (cfg.t3.hidden_size, cfg.t3.num_layers, cfg.t3.num_heads, cfg.t3.intermediate_size) == (1024, 30, 16, 4096)
    assert cfg.flow.encoder_size == 512 and cfg.estimator.num_mid_blocks == 12 and cfg.hift.base_channels == 512


def test_cached_model_is_built_atomically_and_verified_on_use(tmp_path, monkeypatch):
    from vllm_chatterbox import demo_model

    directory = tmp_path / "cache" / "demo-tiny"
    real_make = demo_model.make_test_model

    def interrupted(target, *args, **kwargs):
        real_make(target, *args, **kwargs)
        (target / "tokenizer.json").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_model, "make_test_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo_model.cached_test_model(directory)
    assert not directory.exists() and list((tmp_path / "cache").iterdir()) == [], "a partial model was left behind"

    monkeypatch.setattr(demo_model, "make_test_model", real_make)
    assert demo_model.cached_test_model(directory) == directory
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["demo-tiny"]
    conds = (directory / "conds.pt").read_bytes()

    # Used again: verified, not rebuilt.
    monkeypatch.setattr(demo_model, "make_test_model", lambda *a, **k: pytest.fail("rebuilt a sound model"))
    demo_model.cached_test_model(directory)

    # A partly written model from an older version (missing tokenizer, truncated weights) is rebuilt.
    monkeypatch.setattr(demo_model, "make_test_model", real_make)
    for damage in ("missing", "truncated"):
        if damage == "missing":
            (directory / "tokenizer.json").unlink()
        else:
            data = (directory / "s3gen.safetensors").read_bytes()
            (directory / "s3gen.safetensors").write_bytes(data[:1000])
        demo_model.cached_test_model(directory)
        demo_model.verify_model_dir(directory)
        assert (directory / "conds.pt").read_bytes() == conds
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["demo-tiny"]


def test_random_weight_models_say_so(tmp_path, tiny_model):
    """make_test_model marks its models (the server's demo page then warns: noise, not speech);
    a demo model cached before the marker existed is rebuilt with it."""
    assert demo_model.is_random_weight_model(tiny_model)
    assert not demo_model.is_random_weight_model(FIXTURE_CKPT)
    cached = demo_model.cached_test_model(tmp_path / "demo")
    (cached / demo_model.RANDOM_WEIGHTS_MARKER).unlink()
    with pytest.raises(ValueError, match="random_weights.json is missing"):
        demo_model.verify_model_dir(cached)
    assert demo_model.is_random_weight_model(demo_model.cached_test_model(tmp_path / "demo"))
