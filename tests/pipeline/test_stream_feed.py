"""A stream's chunk feeder hands the vocoder its T3 tokens through the architecture's streaming
cleaner, the cleaner's trailing tokens last (no engine: a scripted T3 stream and vocoder)."""

from __future__ import annotations

import asyncio

from vllm_chatterbox.config import T3Config, TurboT3Config
from vllm_chatterbox.pipeline.streaming import _Chunk, _feed
from vllm_chatterbox.t3.gpt2.tokens import GPT2StreamingTokenCleaner, stop_marker, tokens_for_s3gen
from vllm_chatterbox.t3.llama.tokens import LlamaStreamingTokenCleaner, clean_speech_tokens


class ScriptedEngine:
    def __init__(self, deliveries):
        self.deliveries = deliveries

    async def stream(self, request):
        for ids in self.deliveries:
            yield ids


class Client:
    def __init__(self, make_cleaner):
        self.streaming_cleaner = make_cleaner


class RecordingVocoder:
    def __init__(self):
        self.pushes = []

    def push(self, state, tokens, final, sink):
        self.pushes.append((list(tokens), final))


def feed(deliveries, make_cleaner):
    async def run():
        vocoder = RecordingVocoder()
        chunk = _Chunk(asyncio.get_running_loop())
        await _feed(ScriptedEngine(deliveries), Client(make_cleaner), None, "state", vocoder, chunk, 0)
        return vocoder.pushes, chunk.tokens

    return asyncio.run(run())


def test_gpt2_tokens_end_with_the_silence_tokens_in_the_final_push():
    cfg = TurboT3Config()
    deliveries = [[6562, 11], [12, 6561, 13], [14, stop_marker(cfg)]]
    pushes, count = feed(deliveries, lambda: GPT2StreamingTokenCleaner(cfg))
    assert pushes[-1] == ([4299, 4299, 4299], True) and not any(final for _, final in pushes[:-1])
    sent = [t for tokens, _ in pushes for t in tokens]
    assert sent == tokens_for_s3gen([t for ids in deliveries for t in ids], cfg) and count == len(sent)


def test_llama_tokens_end_with_an_empty_final_push():
    cfg = T3Config()
    deliveries = [[cfg.start_speech_token, 5], [6, cfg.stop_speech_token]]
    pushes, count = feed(deliveries, lambda: LlamaStreamingTokenCleaner(cfg))
    assert pushes == [([5], False), ([6], False), ([], True)] and count == 2
    assert [5, 6] == clean_speech_tokens([t for ids in deliveries for t in ids], cfg)
