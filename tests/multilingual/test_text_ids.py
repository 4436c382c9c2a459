"""The multilingual model's prompt carries ``[255] + MultilingualTokenizer ids + [0]`` for each language.

The tokeniser itself is tested in tests/text; here we check that ChatterboxTTS picks it for a
multilingual directory, passes the language through, and builds the prompt from those ids.
"""

from __future__ import annotations

import pytest
import torch

from reference.t3 import ReferenceT3
from vllm_chatterbox.text import MultilingualTokenizer, normalize_text

SENTENCES = {
    "es": "¿Dónde está la biblioteca? Mañana vamos al mercado, señor Núñez.",
    "en": "The quick brown fox jumps over the lazy dog.",
    "fr": "Où est passé le garçon? Il était déjà là à midi.",
    "de": "Die Straße ist nass, weil es gestern geregnet hat; Grüße aus Köln.",
}


@pytest.fixture(scope="module")
def reference(mtl_tts):
    return ReferenceT3(mtl_tts.files.t3, mtl_tts.config.t3)


@pytest.fixture(scope="module")
def tokenizer(mtl_tts):
    return MultilingualTokenizer.from_file(mtl_tts.files.tokenizer)


def _packed(prefill: torch.Tensor) -> torch.Tensor:
    return torch.cat([prefill[0], prefill[1]], dim=1)


@pytest.mark.parametrize("language", list(SENTENCES))
def test_prompt_holds_the_multilingual_text_ids(mtl_tts, reference, tokenizer, language):
    text = SENTENCES[language]
    expected = [255, *tokenizer.encode(normalize_text(text, multilingual=True), language), 0]
    assert expected[1] == tokenizer._tokenizer.token_to_id(f"[{language}]")
    assert max(expected) < 2454 and mtl_tts.text_token_ids(text, language) == expected

    request = mtl_tts.prepare_t3_requests(text, language=language, exaggeration=0.7)[0]
    voice = mtl_tts.builtin_voice
    conditioning = reference.conditioning(voice.speaker_emb, voice.cond_prompt_speech_tokens, 0.7)
    want = _packed(reference.prefill_embeds(conditioning, expected))
    assert request.prompt_embeds.shape == want.shape
    torch.testing.assert_close(request.prompt_embeds, want, atol=1e-5, rtol=1e-5)


def test_language_per_text(mtl_tts):
    texts = [SENTENCES["es"], SENTENCES["de"], SENTENCES["en"]]
    batch = mtl_tts.prepare_t3_requests(texts, language=["es", "de", "EN"])
    for text, language, request in zip(texts, ["es", "de", "en"], batch):
        alone = mtl_tts.prepare_t3_requests(text, language=language)[0]
        assert torch.equal(request.prompt_embeds, alone.prompt_embeds)
    # The same sentence in another language differs only by its tag (and the tokens it implies).
    es, fr = (mtl_tts.text_token_ids(SENTENCES["en"], lang) for lang in ("es", "fr"))
    assert es[2:] == fr[2:] and es[1] != fr[1]
