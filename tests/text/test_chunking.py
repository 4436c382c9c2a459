"""split_text: long text into chunks within a token budget, cut at the best boundaries.

The budget is counted with the English model's own tokenizer and normaliser (as
``ChatterboxTTS.generate_long`` counts it) or, where exact expectations are easier to state,
in words or characters.
"""

import random
import re
import time

import pytest
import torch

from vllm_chatterbox.pipeline.long_text import DEFAULT_MAX_CHUNK_TOKENS
from vllm_chatterbox.text import EnglishTokenizer, normalize_text
from vllm_chatterbox.text.chunking import split_text

torch.set_num_threads(1)

SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)]*$")


@pytest.fixture(scope="module")
def count_tokens():
    from importlib import resources

    with resources.as_file(resources.files("vllm_chatterbox") / "data" / "en_tokenizer.json") as path:
        tokenizer = EnglishTokenizer.from_file(path)
    return lambda text: len(tokenizer.encode(normalize_text(text)))


def count_words(text: str) -> int:
    return len(text.split())


def non_space(text: str) -> str:
    return "".join(text.split())


def chapter(words: int = 4500, seed: int = 0) -> str:
    """Deterministic novel-like prose: a heading, hard-wrapped paragraphs, dialogue, abbreviations,
    decimals, ellipses, ?! and the odd long sentence. About 30 minutes read aloud."""
    rng = random.Random(seed)
    nouns = "house river morning letter window garden captain village road evening doctor lamp table storm".split()
    verbs = "watched opened carried followed remembered noticed crossed answered closed found".split()
    adjectives = "old quiet narrow bright heavy distant silent crooked cold familiar".split()
    names = ["Mr. Holloway", "Mrs. Penrose", "Dr. Abernathy", "Capt. Reyes", "J. R. Whitlock", "Prof. Lindqvist"]

    def clause() -> str:
        return (f"the {rng.choice(adjectives)} {rng.choice(nouns)} {rng.choice(verbs)} the "
                f"{rng.choice(nouns)} near the {rng.choice(adjectives)} {rng.choice(nouns)}")

    def sentence() -> str:
        kind = rng.random()
        if kind < 0.15:
            said = rng.choice(["she asked", "he said", "asked " + rng.choice(names)])
            return f'"Is it {rng.choice(adjectives)} tonight?" {said}.'
        if kind < 0.25:
            return f"{rng.choice(names)} paid {rng.randint(2, 99)}.{rng.randint(10, 99)} pounds for it, e.g. a bargain."
        if kind < 0.32:
            return f"{clause().capitalize()}... and then nothing at all!"
        if kind < 0.37:  # a long one, clauses joined by commas and semicolons
            parts = [clause() for _ in range(rng.randint(5, 8))]
            return (parts[0].capitalize() + ", " + "; ".join(parts[1:-1]) + ", and " + parts[-1] + ".")
        text = clause().capitalize()
        if rng.random() < 0.4:
            text += ", while " + clause()
        return text + rng.choice([".", ".", ".", "?", "!"])

    paragraphs, total = ["CHAPTER SEVEN"], 2
    while total < words:
        paragraph = " ".join(sentence() for _ in range(rng.randint(1, 7)))
        total += len(paragraph.split())
        # Hard-wrap at ~70 columns, as plain-text books are.
        lines, line = [], ""
        for word in paragraph.split():
            if len(line) + len(word) > 70:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        paragraphs.append("\n".join([*lines, line]))
    return "\n\n".join(paragraphs) + "\n"


def check_invariants(text: str, chunks: list[str], max_tokens: int, count) -> None:
    assert chunks, "no chunks"
    for chunk in chunks:
        assert chunk and chunk == chunk.strip() and "  " not in chunk and "\n" not in chunk and "\t" not in chunk
        assert count(chunk) <= max_tokens, (count(chunk), chunk)
    assert non_space("".join(chunks)) == non_space(text)


def test_chapter(count_tokens):
    text = chapter()
    assert 4400 <= len(text.split()) <= 4700
    start = time.perf_counter()
    chunks = split_text(text, DEFAULT_MAX_CHUNK_TOKENS, count_tokens)
    seconds = time.perf_counter() - start
    check_invariants(text, chunks, DEFAULT_MAX_CHUNK_TOKENS, count_tokens)
    assert seconds < 15, f"splitting a chapter took {seconds:.1f} s"

    assert chunks[0] == "CHAPTER SEVEN"  # a heading is never run into the text after it
    body = chunks[1:]
    # Every sentence of the chapter fits the budget except the long comma/semicolon ones, so
    # chunks end at a sentence end unless they end at a clause inside a long sentence.
    ends = [SENTENCE_END.search(c) is not None for c in body]
    clause_ends = [c.endswith((",", ";")) for c in body]
    assert all(e or c for e, c in zip(ends, clause_ends))
    assert sum(ends) >= 0.8 * len(body)
    # Chunks are packed: few of them, mostly well filled (the text averages ~50 tokens a sentence).
    sizes = sorted(count_tokens(c) for c in body)
    total = count_tokens(text)
    assert len(body) <= 1.6 * total / DEFAULT_MAX_CHUNK_TOKENS
    assert sizes[len(sizes) // 2] >= 0.7 * DEFAULT_MAX_CHUNK_TOKENS
    # Abbreviations and decimals never end a chunk.
    for chunk in body:
        assert not re.search(r"\b(Mr|Mrs|Dr|Capt|Prof|e\.g|[A-Z])\.$", chunk), chunk
        assert not re.search(r"\d\.$", chunk), chunk


def test_sentence_boundaries_and_abbreviations():
    # Any two of these sentences exceed 8 words, so each becomes its own chunk exactly.
    sentences = [
        "Mr. Smith met Dr. Brown at noon.",
        "Prices rose 3.5 percent in May.",
        '"Is it true?" she asked him quietly.',
        "He paused... and then he spoke.",
        "It was item No. 5 on page 12.",
        "J. R. Tolkien wrote about hobbits.",
        "The U.S. economy grew last year.",
        "Wait... The lights went out again!",
        "Use tools, e.g. hammers and saws.",
        "Nobody knew it, not even I.",
        "Then the bell rang twice more.",
    ]
    assert split_text(" ".join(sentences), 8, count_words) == sentences


def test_quotes_and_brackets_stay_with_their_sentence():
    # A lower-case word after ?" or !" continues the sentence; closing quotes and brackets stay.
    text = '"Run!" he cried. "Where?" She followed. (It was late.) They stopped.'
    assert split_text(text, 3, count_words) == ['"Run!" he cried.', '"Where?" She followed.', "(It was late.)",
                                               "They stopped."]


def test_cjk_sentences_split_without_spaces():
    text = "你好。世界！再见？好的。"
    assert split_text(text, 3, len) == ["你好。", "世界！", "再见？", "好的。"]
    assert split_text(text, 6, len) == ["你好。世界！", "再见？好的。"]


def test_packing_is_balanced_and_fills_the_budget():
    # Five 3-word sentences under an 8-word budget: 2+2+1 greedily, balanced to 2+2+1 or
    # 2+1+2 but never more than three chunks.
    text = "One two three. Four five six. Seven eight nine. Ten eleven twelve. Thirteen fourteen fifteen."
    chunks = split_text(text, 8, count_words)
    assert len(chunks) == 3
    check_invariants(text, chunks, 8, count_words)
    # Everything fits: one chunk.
    assert split_text(text, 100, count_words) == [text]


def test_newlines_and_paragraphs():
    text = "The first line\nwraps onto the second.\n\n\n  A new paragraph\t starts here.  \n"
    assert split_text(text, 100, count_words) == ["The first line wraps onto the second. A new paragraph starts here."]
    # A paragraph ending without punctuation (a heading) always ends its chunk.
    text = "Part One\n\nChapter 1\n\nIt begins. It goes on."
    assert split_text(text, 100, count_words) == ["Part One", "Chapter 1", "It begins. It goes on."]


def test_prefers_paragraph_ends():
    # Budget for two sentences; the cut should fall at the paragraph end, not inside the paragraph.
    text = "Aa bb. Cc dd.\n\nEe ff. Gg hh."
    assert split_text(text, 5, count_words) == ["Aa bb. Cc dd.", "Ee ff. Gg hh."]


def test_long_sentence_splits_at_clauses():
    text = ("When the rain stopped, the village woke; the baker opened his shop, the children ran to the "
            "river, and the old captain walked slowly down the hill toward the harbour.")
    # The longest clause has 12 words: chunks end at clause ends only.
    chunks = split_text(text, 12, count_words)
    check_invariants(text, chunks, 12, count_words)
    assert len(chunks) > 1
    assert all(c.endswith((",", ";")) for c in chunks[:-1]), chunks


def test_dashes_are_clause_boundaries():
    text = "The road was long\u2014longer than anyone had thought \u2013 and the walkers grew tired - very tired."
    chunks = split_text(text, 6, count_words)
    check_invariants(text, chunks, 6, count_words)
    assert chunks[0] == "The road was long\u2014"


def test_huge_sentence_without_punctuation(count_tokens):
    rng = random.Random(1)
    words = [rng.choice(["alpha", "beta", "gamma", "delta", "epsilon", "a", "to"]) for _ in range(800)]
    text = " ".join(words)
    chunks = split_text(text, DEFAULT_MAX_CHUNK_TOKENS, count_tokens)
    check_invariants(text, chunks, DEFAULT_MAX_CHUNK_TOKENS, count_tokens)
    # Cut between words (never inside one), into chunks of even size: no stub at the end.
    assert all(chunk.split() == words[i: i + len(chunk.split())] for i, chunk in
               zip(_offsets([len(c.split()) for c in chunks]), chunks))
    sizes = [count_tokens(c) for c in chunks]
    assert min(sizes) >= 0.75 * max(sizes), sizes


def _offsets(lengths: list[int]) -> list[int]:
    out, total = [], 0
    for n in lengths:
        out.append(total)
        total += n
    return out


def test_huge_word_splits_into_characters(count_tokens):
    text = "Start. " + "x" * 1200 + " end."
    chunks = split_text(text, 50, count_tokens)
    check_invariants(text, chunks, 50, count_tokens)
    assert chunks[0].startswith("Start. x") and chunks[-1].endswith("x end.")
    assert len(chunks) >= count_tokens("x" * 1200) / 50


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t "])
def test_empty_text_is_rejected(text):
    with pytest.raises(ValueError, match="empty"):
        split_text(text, 10, count_words)


@pytest.mark.parametrize("max_tokens", [0, -3, 2.5, True, None])
def test_bad_budget_is_rejected(max_tokens):
    with pytest.raises(ValueError, match="max_tokens"):
        split_text("Hello there.", max_tokens, count_words)


def test_budget_below_one_character_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        split_text("Hello there.", 1, lambda text: 2 * len(text))


def test_non_string_is_rejected():
    with pytest.raises(ValueError, match="str"):
        split_text(b"bytes", 10, count_words)
