"""The ``vllm-chatterbox`` command: the README's main job, voices, and one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from tests.paths import SHARED_DIR
from vllm_chatterbox import cli
from vllm_chatterbox.engine.watermark import load_watermarker
from vllm_chatterbox.test_model import make_test_model
from vllm_chatterbox.voice.voice import Voice

REFERENCE_WAV = SHARED_DIR / "fixtures" / "tiny" / "audio" / "voice2_24k.wav"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("cli-model"), "tiny", seed=0)


def run_cli(*args, cache_dir, timeout=600):
    env = dict(os.environ, VLLM_CHATTERBOX_CACHE=str(cache_dir))
    return subprocess.run([sys.executable, "-m", "vllm_chatterbox.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("vllm-chatterbox: error: ")
    return err[0]


def test_speak_without_model_uses_the_demo_model_and_says_so(tmp_path):
    """The README's first command, after set-up."""
    out = tmp_path / "hello.wav"
    result = run_cli("speak", "Hello from the test.", "-o", out, "--max-new-tokens", 12, "--seed", 1,
                     cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RANDOM-WEIGHT demo model" in result.stderr
    assert "noise, not speech" in result.stderr
    wav, rate = soundfile.read(out)
    assert rate == 24000 and wav.ndim == 1
    assert 0 < len(wav) <= 12 * 960
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0


def test_speak_file_with_model_and_voice(tmp_path, tiny_dir):
    text = tmp_path / "chapter.txt"
    text.write_text("The first sentence of the chapter. " * 3 + "And the last one.", encoding="utf-8")
    out = tmp_path / "chapter.wav"
    result = run_cli("speak", "--file", text, "-o", out, "--model", tiny_dir, "--voice", REFERENCE_WAV,
                     "--max-new-tokens", 8, "--seed", 3, "--exaggeration", 0.7, "--cfg-weight", 0.3,
                     cache_dir=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RANDOM-WEIGHT" not in result.stderr
    wav, rate = soundfile.read(out)
    assert rate == 24000 and len(wav) > 0


def test_voice_command_writes_a_loadable_voice_without_starting_vllm(tmp_path, tiny_dir, monkeypatch, capsys):
    def no_engine(*args, **kwargs):
        raise AssertionError("the voice command started the T3 engine")

    monkeypatch.setattr("vllm_chatterbox.tts.T3Engine", no_engine)
    out = tmp_path / "voice.pt"
    assert cli.main(["voice", str(REFERENCE_WAV), "-o", str(out), "--model", str(tiny_dir),
                     "--exaggeration", "0.3"]) == 0
    voice = Voice.load(out)
    builtin = Voice.load(tiny_dir / "conds.pt")
    assert voice.exaggeration == pytest.approx(0.3)
    for name in ("speaker_emb", "embedding"):
        assert getattr(voice, name).shape == getattr(builtin, name).shape
        assert torch.isfinite(getattr(voice, name)).all()
    assert voice.prompt_feat.shape[-1] == builtin.prompt_feat.shape[-1]


@pytest.mark.parametrize("args,message", [
    (["speak", "-o", "x.wav"], "give either TEXT or --file"),
    (["speak", "Hi.", "--file", "t.txt", "-o", "x.wav"], "give either TEXT or --file"),
    (["speak", "--file", "/nonexistent/chapter.txt", "-o", "x.wav"], "cannot read --file"),
])
def test_speak_errors_are_one_line_and_non_zero(args, message, capsys):
    assert cli.main(args) == 2
    assert message in error_line(capsys)


def test_voice_errors_are_one_line_and_non_zero(tmp_path, tiny_dir, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    assert cli.main(["voice", str(bad), "-o", str(tmp_path / "v.pt"), "--model", str(tiny_dir)]) == 2
    assert "bad.wav" in error_line(capsys)


def test_watermark_unavailable_fails_before_loading_the_model(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "perth", None)
    monkeypatch.setattr(cli, "_load_model", lambda *a: pytest.fail("model loaded before the watermark check"))
    load_watermarker.cache_clear()
    try:
        assert cli.main(["speak", "Hi.", "-o", str(tmp_path / "x.wav"), "--watermark"]) == 2
    finally:
        load_watermarker.cache_clear()
    assert "resemble-perth" in error_line(capsys)


def test_make_test_model(tmp_path, capsys):
    assert cli.main(["make-test-model", str(tmp_path / "m"), "--size", "tiny", "--seed", "2"]) == 0
    assert {"t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors", "tokenizer.json", "conds.pt"} <= \
        {p.name for p in (tmp_path / "m").iterdir()}


def test_missing_language_package_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    """Japanese without pykakasi: the tokenizer's ImportError becomes the CLI's one-line error."""
    from tests.paths import SHARED_DATA
    from vllm_chatterbox.text import MultilingualTokenizer

    tokenizer = MultilingualTokenizer.from_file(SHARED_DATA / "grapheme_mtl_merged_expanded_v1.json")

    class TokenizingOnly:
        def generate(self, text, voice, language=None, **params):
            return [tokenizer.encode(text, language)]

    monkeypatch.setitem(sys.modules, "pykakasi", None)
    monkeypatch.setattr(cli, "_load_model", lambda *a: TokenizingOnly())
    assert cli.main(["speak", "東京です。", "-o", str(tmp_path / "ja.wav"), "--language", "ja"]) == 2
    assert "pykakasi" in error_line(capsys)
