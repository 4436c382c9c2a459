"""watermark=True: Perth applied to every output, or a clear error before any synthesis."""

import sys
import types

import numpy as np
import pytest

from vllm_chatterbox.pipeline.watermark import load_watermarker


class MarkingWatermarker:
    """Stands in for perth.PerthImplicitWatermarker: records calls, returns a visibly changed signal."""

    def __init__(self):
        self.calls = []

    def apply_watermark(self, signal, sample_rate):
        self.calls.append((len(signal), sample_rate))
        return np.asarray(signal, dtype=np.float64) * 0.5 + 0.25


@pytest.fixture
def fake_perth(monkeypatch):
    watermarker = MarkingWatermarker()
    module = types.ModuleType("perth")
    module.PerthImplicitWatermarker = lambda: watermarker
    monkeypatch.setitem(sys.modules, "perth", module)
    load_watermarker.cache_clear()
    yield watermarker
    load_watermarker.cache_clear()


@pytest.fixture
def perth_without_watermarker(monkeypatch):
    """What a CPU install gives: perth imports, but its watermarker needs torchaudio."""
    module = types.ModuleType("perth")
    module.PerthImplicitWatermarker = None
    monkeypatch.setitem(sys.modules, "perth", module)
    load_watermarker.cache_clear()
    yield
    load_watermarker.cache_clear()


def test_generate_marks_every_output(tts_tiny, fake_perth):
    texts = ["Hello there.", "A second, somewhat longer sentence."]
    plain = tts_tiny.generate(texts, seed=[1, 2], max_new_tokens=12)
    marked = tts_tiny.generate(texts, seed=[1, 2], max_new_tokens=12, watermark=True)
    assert fake_perth.calls == [(len(w), 24000) for w in plain]
    for p, m in zip(plain, marked):
        assert m.dtype == np.float32
        np.testing.assert_allclose(m, p * 0.5 + 0.25, atol=1e-6)


def test_generate_long_marks_the_joined_audio_once(tts_tiny, fake_perth):
    text = "First sentence here. " * 3
    plain = tts_tiny.generate_long(text, seed=3, max_new_tokens=10, max_chunk_tokens=8, progress=False)
    marked = tts_tiny.generate_long(text, seed=3, max_new_tokens=10, max_chunk_tokens=8, progress=False,
                                    watermark=True)
    assert fake_perth.calls == [(len(plain), 24000)]
    np.testing.assert_allclose(marked, plain * 0.5 + 0.25, atol=1e-6)


def test_missing_watermarker_fails_before_synthesis(tts_tiny, perth_without_watermarker, monkeypatch):
    def no_synthesis(*args, **kwargs):
        raise AssertionError("synthesis started")

    monkeypatch.setattr(tts_tiny, "_synthesize", no_synthesis)
    with pytest.raises(RuntimeError, match="PerthImplicitWatermarker could not be imported"):
        tts_tiny.generate("Hello.", watermark=True)
    with pytest.raises(RuntimeError, match="resemble-perth"):
        tts_tiny.generate_long("Hello.", watermark=True)


def test_perth_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "perth", None)  # makes ``import perth`` raise ImportError
    load_watermarker.cache_clear()
    with pytest.raises(RuntimeError, match="importing perth failed"):
        load_watermarker()
    load_watermarker.cache_clear()


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_watermark_flag_must_be_bool(tts_tiny, flag):
    with pytest.raises(ValueError, match="watermark must be True or False"):
        tts_tiny.generate("Hello.", watermark=flag)
