"""Bad ``language`` values fail with a clear ValueError before anything reaches vLLM."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import NoEngine
import vllm_chatterbox.tts as tts_module
from vllm_chatterbox.demo_model import make_test_model


@pytest.mark.parametrize("call,kwargs,message", [
    ("generate_speech_tokens", {"texts": "Hola."}, r"needs a language; supported languages: ar \(Arabic\), "),
    ("generate_speech_tokens", {"texts": "Hola.", "language": "xx"}, r"unsupported language 'xx'.*es \(Spanish\)"),
    ("generate_speech_tokens", {"texts": "Hola.", "language": 3}, "language must be a str"),
    ("generate_speech_tokens", {"texts": ["Hola.", "Hallo."], "language": ["es", None]}, "text 1: .*needs a language"),
    ("generate_speech_tokens", {"texts": ["Hola.", "Hallo."], "language": ["es"]}, "language: got 1 values for 2"),
    ("generate", {"texts": "Hola.", "language": "klingon"}, "unsupported language 'klingon'"),
    ("generate_long", {"text": "Hola. Adiós.", "max_chunk_tokens": 8}, "needs a language"),
    ("generate_long", {"text": "Hola. Adiós.", "language": ["es"]}, "one value for the whole text"),
])
def test_multilingual_language_errors(mtl_tts, call, kwargs, message):
    before = mtl_tts.t3_engine.requests_submitted
    with pytest.raises(ValueError, match=message):
        getattr(mtl_tts, call)(**kwargs)
    assert mtl_tts.t3_engine.requests_submitted == before, "nothing may reach vLLM"


@pytest.fixture(scope="module")
def english_tts(tmp_path_factory):
    """The English tiny model without a vLLM engine: request preparation needs none."""
    directory = make_test_model(tmp_path_factory.mktemp("en"), "tiny", seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tts_module, "T3Engine", NoEngine)
        return tts_module.ChatterboxTTS.from_dir(directory, device="cpu")


def test_english_model_takes_only_english(english_tts):
    assert not english_tts.files.multilingual
    plain = english_tts.prepare_t3_requests("Hello there.")[0]
    tagged = english_tts.prepare_t3_requests("Hello there.", language="en")[0]
    assert torch.equal(plain.prompt_embeds, tagged.prompt_embeds)
    with pytest.raises(ValueError, match="the English model cannot speak language 'es'; use the multilingual"):
        english_tts.prepare_t3_requests("Hola.", language="es")
    with pytest.raises(ValueError, match="text 1: the English model cannot speak language 'de'"):
        english_tts.prepare_t3_requests(["Hi.", "Hallo."], language=["en", "de"])
    with pytest.raises(ValueError, match="unsupported language 'xx'"):
        english_tts.prepare_t3_requests("Hi.", language="xx")
