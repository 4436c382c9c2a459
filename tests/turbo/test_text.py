"""Turbo text front end vs the ids the original recorded (``tiny-turbo/ref/text.npz``)."""

import json

import numpy as np
import pytest

from tests.paths import TURBO_CKPT, TURBO_REF
from vllm_chatterbox.text import normalize_text
from vllm_chatterbox.text.turbo import TurboTokenizer

TEXT = np.load(TURBO_REF / "text.npz")
TEXT_JSON = json.loads((TURBO_REF / "text.json").read_text())
CASES = range(len(TEXT["input"]))


@pytest.fixture(scope="module")
def tokenizer() -> TurboTokenizer:
    return TurboTokenizer.from_dir(TURBO_CKPT, text_vocab_size=50276)


@pytest.mark.parametrize("k", CASES)
def test_punc_norm_matches_original(k):
    assert normalize_text(str(TEXT["input"][k]), turbo=True) == str(TEXT["normalized"][k])


@pytest.mark.parametrize("k", CASES)
def test_ids_match_original(tokenizer, k):
    offsets = TEXT["offsets"]
    expected = TEXT["ids_concat"][offsets[k]:offsets[k + 1]].tolist()
    assert tokenizer.encode(str(TEXT["input"][k])) == expected


def test_tags_are_single_ids(tokenizer):
    assert sorted(tokenizer.added_tags) == sorted(TEXT_JSON["added_tokens"])
    ids = tokenizer.encode("Oh [sigh] fine.")
    assert TEXT_JSON["added_tokens"]["[sigh]"] in ids
    assert "[LAUGH]" not in tokenizer.added_tags


def test_turbo_keeps_rules_the_english_variant_applies():
    assert normalize_text("Wait... so - yes; ok", turbo=True) == "Wait... so - yes; ok."
    assert normalize_text("Wait... so - yes; ok") == "Wait,  so, yes,  ok."
