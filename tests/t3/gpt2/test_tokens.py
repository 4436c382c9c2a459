"""The GPT-2 T3's streaming clean-up of its tokens against the one-shot clean-up (``tokens_for_s3gen``)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_chatterbox.config import TurboT3Config
from vllm_chatterbox.t3.gpt2.tokens import GPT2StreamingTokenCleaner, stop_marker, tokens_for_s3gen

CFG = TurboT3Config()
START, STOP, MARKER = CFG.start_speech_token, CFG.stop_speech_token, stop_marker(CFG)
# 6562 (the stop id) is an ordinary token at the first step; only the marker ends a request.
TOKENS = st.sampled_from([0, 1, 2, 4299, 6560, START, STOP, MARKER])


def stream_clean(deliveries):
    cleaner = GPT2StreamingTokenCleaner(CFG)
    handed_on = []
    for ids in deliveries:
        handed_on += cleaner.feed(ids)
        if cleaner.stopped:
            break
    return handed_on + cleaner.finish()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(TOKENS, max_size=5), max_size=8))
def test_streamed_clean_up_equals_the_one_shot(deliveries):
    sampled = [t for ids in deliveries for t in ids]
    if MARKER in sampled:  # vLLM ends the request at the marker
        sampled = sampled[: sampled.index(MARKER) + 1]
    assert stream_clean(deliveries) == tokens_for_s3gen(sampled, CFG)


def test_the_marker_stops_and_finish_appends_the_silence_tokens():
    cleaner = GPT2StreamingTokenCleaner(CFG)
    assert cleaner.feed([STOP, 5, START, 6]) == [5, 6] and not cleaner.stopped
    assert cleaner.feed([7, MARKER, 8]) == [7] and cleaner.stopped
    assert cleaner.feed([9]) == []
    assert cleaner.finish() == [4299, 4299, 4299]
