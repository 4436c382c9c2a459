"""The streaming clean-up of T3's tokens against the one-shot clean-up."""

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_chatterbox.config import T3Config
from vllm_chatterbox.t3.llama.tokens import LlamaStreamingTokenCleaner, clean_speech_tokens

CFG = T3Config()
START, STOP = CFG.start_speech_token, CFG.stop_speech_token
TOKENS = st.sampled_from([0, 1, 2, 6560, START, STOP, 7000])


def stream_clean(deliveries):
    cleaner = LlamaStreamingTokenCleaner(CFG)
    handed_on, first_handed_before_start = [], None
    for ids in deliveries:
        tokens = cleaner.feed(ids)
        if START in ids and cleaner.seen_start and first_handed_before_start is None:
            first_handed_before_start = len(handed_on)
        handed_on += tokens
        if cleaner.stopped:
            break
    return handed_on, first_handed_before_start


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(TOKENS, max_size=5), max_size=8))
def test_streamed_clean_up_equals_the_one_shot(deliveries):
    handed_on, before_start = stream_clean(deliveries)
    sampled = [t for ids in deliveries for t in ids]
    if STOP in sampled:  # vLLM ends the request at the stop token
        sampled = sampled[: sampled.index(STOP) + 1]
    one_shot = clean_speech_tokens(sampled, CFG)
    if not before_start:
        assert handed_on == one_shot
    else:
        # Speech tokens were handed on before the first start token: they stay, the rest is exact.
        assert handed_on[before_start:] == one_shot


def test_a_late_start_token_is_logged_and_only_later_tokens_follow(caplog):
    cleaner = LlamaStreamingTokenCleaner(CFG)
    assert cleaner.feed([1, 2]) == [1, 2]
    with caplog.at_level(logging.WARNING):
        assert cleaner.feed([3, START, 4, START, 5]) == [4, 5]
    assert "start-of-speech" in caplog.text
    assert cleaner.feed([6, STOP, 7]) == [6] and cleaner.stopped
    assert cleaner.feed([8]) == []
