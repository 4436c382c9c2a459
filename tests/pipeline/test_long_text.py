"""Long text: joining chunk waveforms with a crossfade, and ChatterboxTTS.generate_long."""

import numpy as np
import pytest
import torch

from vllm_chatterbox.pipeline.long_text import fade_curves, join_with_crossfade
from vllm_chatterbox.text import normalize_text
from vllm_chatterbox.text.chunking import split_text

torch.set_num_threads(1)

SR = 24000
FADE = 1200  # 50 ms at 24 kHz
rng = np.random.default_rng(0)


def noise(n: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(n) * scale).astype(np.float32)


# ---------------------------------------------------------------- join_with_crossfade


def test_lengths():
    wavs = [noise(SR), noise(2 * SR), noise(SR // 2)]
    total = sum(len(w) for w in wavs)
    assert len(join_with_crossfade(wavs, SR, 50, 0)) == total - 2 * FADE
    assert len(join_with_crossfade(wavs, SR, 50, 100)) == total + 2 * 2400
    assert len(join_with_crossfade(wavs, SR, 0, 0)) == total
    assert len(join_with_crossfade(wavs[:1], SR, 50, 100)) == SR


def test_pause_is_silence_between_the_fades():
    a, b = noise(SR), noise(SR)
    out = join_with_crossfade([a, b], SR, 50, 100)
    fade_in, fade_out = fade_curves(FADE)
    np.testing.assert_array_equal(out[:SR - FADE], a[:SR - FADE])  # A as it was ...
    np.testing.assert_allclose(out[SR - FADE:SR], a[SR - FADE:] * fade_out, rtol=1e-6)  # ... fading out
    np.testing.assert_array_equal(out[SR:SR + 2400], 0)  # 100 ms of silence
    np.testing.assert_allclose(out[SR + 2400:SR + 2400 + FADE], b[:FADE] * fade_in, rtol=1e-6)  # B fades in
    np.testing.assert_array_equal(out[SR + 2400 + FADE:], b[FADE:])


def test_raised_cosine_passes_a_signal_joined_with_itself_unchanged():
    """Two chunks that overlap with the same content (a continuous signal cut in two): the
    raised-cosine crossfade gives back the signal, so no bump and no clipping, even at 0.99."""
    t = np.arange(3 * SR) / SR
    signal = (0.99 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    cut = SR
    out = join_with_crossfade([signal[:cut + FADE], signal[cut:]], SR, 50, 0, equal_power=False)
    assert len(out) == len(signal)
    np.testing.assert_allclose(out, signal, atol=1e-6)
    constant = np.full(SR, 0.99, np.float32)
    out = join_with_crossfade([constant, constant, constant], SR, 50, 0, equal_power=False)
    np.testing.assert_allclose(out, 0.99, atol=1e-6)
    assert np.abs(out).max() <= 1.0


def test_equal_power_keeps_loudness_of_unrelated_chunks():
    fade_in, fade_out = fade_curves(FADE)
    np.testing.assert_allclose(fade_in ** 2 + fade_out ** 2, 1.0, atol=1e-6)
    # Unrelated noise on both sides: the overlap is as loud as the rest (a raised cosine dips).
    rms = []
    for equal_power in (True, False):
        ratios = []
        for _ in range(20):
            out = join_with_crossfade([noise(SR), noise(SR)], SR, 50, 0, equal_power=equal_power)
            overlap = out[SR - FADE:SR]
            ratios.append(np.sqrt(np.mean(overlap ** 2)) / np.sqrt(np.mean(out[:SR - FADE] ** 2)))
        rms.append(np.mean(ratios))
    assert abs(rms[0] - 1.0) < 0.05, rms
    assert rms[1] < 0.9, rms


def test_joint_is_continuous():
    """Two unrelated smooth signals: no sample-to-sample step at the joint much beyond the
    steepest inside them (the fades add a little slope); plain concatenation jumps."""
    t = np.arange(SR) / SR
    a = (0.8 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    b = (0.8 * np.cos(2 * np.pi * 330 * t + 1.0)).astype(np.float32)
    steepest = max(np.abs(np.diff(a)).max(), np.abs(np.diff(b)).max())
    for pause in (0, 20, 100):  # ms
        for equal_power in (True, False):
            out = join_with_crossfade([a, b], SR, 50, pause, equal_power=equal_power)
            assert np.abs(np.diff(out)).max() <= 1.5 * steepest, (pause, equal_power)
    assert np.abs(np.diff(join_with_crossfade([a, b], SR, 0, 0))).max() > 5 * steepest


def test_chunks_shorter_than_the_crossfade():
    a, tiny, b = noise(SR), noise(100), noise(SR)
    out = join_with_crossfade([a, tiny, b], SR, 50, 0)
    # The joint A|tiny overlaps 100 samples; tiny|B overlaps the full 1200 (reaching into A).
    assert len(out) == SR + 100 + SR - 100 - FADE
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out).max() <= 2 * max(np.abs(a).max(), np.abs(b).max())
    # Only short chunks: each joint overlaps as far as both sides reach.
    out = join_with_crossfade([noise(10), noise(3), noise(7)], SR, 50, 0)
    assert len(out) == 10 + 3 + 7 - 3 - 7
    assert np.isfinite(out).all()
    # With a pause each fade stays inside its own chunk.
    out = join_with_crossfade([noise(10), tiny], SR, 50, 100)
    assert len(out) == 10 + 2400 + 100
    np.testing.assert_allclose(out[-100:], tiny * fade_curves(100)[0], rtol=1e-6)


def test_empty_chunks_are_skipped():
    a, b = noise(SR), noise(SR)
    empty = np.zeros(0, np.float32)
    np.testing.assert_array_equal(join_with_crossfade([empty, a, empty, empty, b, empty], SR),
                                  join_with_crossfade([a, b], SR))
    out = join_with_crossfade([empty, empty], SR)
    assert out.dtype == np.float32 and out.shape == (0,)


def test_output_is_float32():
    out = join_with_crossfade([np.ones(3000, np.float64), [0.5] * 3000], SR, 50, 10)
    assert out.dtype == np.float32


@pytest.mark.parametrize("args,kwargs,message", [
    (([],), {}, "non-empty"),
    (([np.zeros((2, 10))],), {}, "1-D"),
    (([np.zeros(10)], 0), {}, "sample_rate"),
    (([np.zeros(10)],), {"crossfade_ms": -1}, "crossfade_ms"),
    (([np.zeros(10)],), {"pause_ms": float("nan")}, "pause_ms"),
])
def test_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        join_with_crossfade(*args, **kwargs)


# ---------------------------------------------------------------- generate_long (engine)

SENTENCES = [
    "The morning was cold and bright over the harbour.",
    "Fishing boats rocked gently against the old stone quay.",
    "A gull called twice and then fell silent.",
    "Mrs. Penrose opened the bakery at six, as she always did.",
    "The smell of bread drifted down the narrow street.",
    '"Is it Tuesday already?" asked the postman.',
    "Nobody answered him, but everybody smiled.",
    "By nine the market square was full of voices.",
    "Children chased each other between the stalls.",
    "At noon the church bell rang across the water.",
]
TEXT = " ".join(SENTENCES[:5]) + "\n\n" + " ".join(SENTENCES[5:])


def test_generate_long_equals_generate_on_its_chunks(tts_tiny):
    """The chunks go through the same pipeline as ``generate`` (seed + i for chunk i), in order,
    and each appears in the joined output untouched between its fade-in and fade-out (both
    unmarked: the watermark of the joined audio is tested in test_watermark.py)."""
    tokens = lambda chunk: len(tts_tiny.t3.tokenizer.encode(normalize_text(chunk)))  # noqa: E731
    max_chunk_tokens = max(tokens(s) for s in SENTENCES) + 2  # about one sentence per chunk
    chunks = split_text(TEXT, max_chunk_tokens, tokens)
    assert len(chunks) >= 8
    params = dict(max_new_tokens=20, n_timesteps=2, temperature=0.8, watermark=False)

    out = tts_tiny.generate_long(TEXT, max_chunk_tokens=max_chunk_tokens, seed=7, progress=False, **params)
    wavs = tts_tiny.generate(chunks, seed=[7 + i for i in range(len(chunks))], **params)

    assert out.dtype == np.float32 and np.isfinite(out).all()
    spoken = [w for w in wavs if len(w)]
    assert len(spoken) >= len(chunks) - 1
    assert all(2 * FADE < len(w) <= 20 * 960 for w in spoken)  # at most 20 speech tokens of 960 samples
    gap = 2400  # default pause of 100 ms
    assert len(out) == sum(len(w) for w in spoken) + (len(spoken) - 1) * gap
    offset = 0
    for wav in spoken:
        np.testing.assert_allclose(out[offset + FADE:offset + len(wav) - FADE], wav[FADE:-FADE], atol=1e-5, rtol=0)
        offset += len(wav) + gap


def test_generate_long_rejects_bad_input(tts_tiny):
    with pytest.raises(ValueError, match="empty"):
        tts_tiny.generate_long("  \n ", progress=False)
    with pytest.raises(ValueError, match="max_chunk_tokens"):
        tts_tiny.generate_long("Hello.", max_chunk_tokens=0, progress=False)
    with pytest.raises(ValueError, match="one value for the whole text"):
        tts_tiny.generate_long("Hello. Again.", temperature=[0.5, 0.6], progress=False)
    with pytest.raises(ValueError, match="seed"):
        tts_tiny.generate_long("Hello.", seed=-1, progress=False)
    with pytest.raises(ValueError, match="crossfade_ms"):
        tts_tiny.generate_long("Hello.", crossfade_ms=-5, progress=False)


def test_a_half_hour_chapter(tts_tiny):
    """~4500 words (30 minutes read aloud) in one call: every chunk is synthesised (seeded, so
    several prefill steps of seeded prompts) and joined, in order."""
    sentences = [f"Paragraph {p}, sentence {s}: the lantern swung in the wind while the ferry crossed the "
                 f"dark river toward the harbour lights." for p in range(60) for s in range(4)]
    text = "\n\n".join(" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4))
    assert len(text.split()) >= 4500
    tokens = lambda chunk: len(tts_tiny.t3.tokenizer.encode(normalize_text(chunk)))  # noqa: E731
    chunks = split_text(text, 150, tokens)
    assert len(chunks) >= 100

    out = tts_tiny.generate_long(text, seed=1, max_new_tokens=6, n_timesteps=2, progress=False)

    assert out.dtype == np.float32 and np.isfinite(out).all()
    gap = 2400  # default pause of 100 ms
    assert len(out) >= 0.9 * len(chunks) * (gap + 2 * 960)  # nearly every chunk spoke, >= 2 tokens each
    assert len(out) <= (len(chunks) - 1) * gap + len(chunks) * 6 * 960
