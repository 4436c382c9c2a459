"""Streaming S3Gen: speech tokens that arrive over time -> 24 kHz audio pieces, streams batched.

Contract (what the T3 side codes against)::

    state = new_stream(s3gen, voice, n_timesteps=10, seed=None, schedule=None)
    pieces = vocode_stream_chunks(s3gen, [(state, new_tokens, final), ...])

- ``new_tokens``: the speech tokens that arrived for that stream since its last call, already
  cleaned (ids < 6561, no start/stop tokens); may be empty. ``final``: no more tokens will come.
- Each call appends the tokens. Every stream that has gathered its next chunk
  (``StreamSchedule.chunk_tokens``: new tokens since its last chunk) or is final gets its next
  piece; all of those run together, the flow and the vocoder each in length-grouped padded
  batches as in :meth:`S3Gen.inference`. Streams with the same ``n_timesteps`` share CFM batches.
- Returns one float32 numpy array per item, in item order: the new audio (empty when nothing
  was ready). After the ``final`` call the concatenation of a stream's pieces is the whole
  utterance (``480 * (2 * Ts - (Tm - 2 * Tp))`` samples, as the one-shot path); the state is
  then finished and rejects more tokens.
- Bad input (a finished stream, the same stream twice in one call, ids out of range, a bad
  schedule or voice) raises ``ValueError`` before any state changes.

How a piece is made (the original's streaming hooks, from CosyVoice2, plus joins):

- Flow: the conformer encoder and the CFM see the voice prompt + the stream's past tokens (all
  of them, or the last ``context_tokens`` before the first frame still to emit) + the new tokens.
  While not final the last ``pre_lookahead_len`` (3) tokens only serve as look-ahead and their
  frames are dropped (the original's ``finalize=False``). The newest ``overlap_frames`` mel
  frames are held back; the next piece recomputes them with more context and crossfades from
  the held version to the new one (raised cosine), so the mel is continuous at every join.
- Vocoder: HiFT re-reads ``hift_context_frames`` committed mel frames left of the piece with
  exactly the excitation used for them before (the original's ``cache_source``), and the held
  frames serve as right context. The excitation continues the sine phases of the previous
  piece sample-exactly (float64 phase carried across pieces). The held frames' audio is
  crossfaded with the next piece's version of it, like the mel.
- Noise: every CFM noise frame and vocoder noise sample is a function of (seed, position)
  (:mod:`vllm_chatterbox.s3gen.noise`), so a stream's audio does not depend on the batch it
  ran in, and ``S3Gen.inference(..., seeds=[seed])`` draws the same noise for the one-shot.
- Decoders: the flow's decoder is the model's, so Turbo / Nano's meanflow decoder (2 steps,
  one row per item, no CFG) streams the same way, with the same noise positions; only the
  one-shot call without seeds draws meanflow noise in the original's order instead
  (:func:`~vllm_chatterbox.s3gen.meanflow.meanflow_noise`). Its cheap steps make small first
  pieces affordable: each model's schedule is its row of ``variants.py``.

Exactness: the encoder's and the estimator's attention are bidirectional over the whole
utterance, so a frame depends on tokens after it; a piece computed before those tokens exist
cannot equal the one-shot result (the measured gap is in the tests and ``bench/s3gen_stream.py``).
While the context window covers the whole prefix (always with ``context_tokens=None``), a stream
whose only piece is the final one equals ``S3Gen.inference(..., seeds=[seed])`` to the last bit,
and the final piece's mel frames past the last join equal the one-shot's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vllm_chatterbox.config import FlowConfig
from vllm_chatterbox.s3gen.inputs import check_stream_seed, check_voice, pad_mels, random_seed, token_tensor
from vllm_chatterbox.s3gen.model import DEFAULT_MAX_BATCH_FRAMES, S3Gen, length_groups
from vllm_chatterbox.s3gen.noise import flow_noise
from vllm_chatterbox.voice.voice import Voice


@dataclass(frozen=True)
class StreamSchedule:
    """When pieces are made and how they join (measurements: ``tests/s3gen/test_streaming.py``,
    ``bench/s3gen_stream.py``)."""

    # New speech tokens (25 per second) needed before each piece; the last value repeats. The
    # first piece gives (first - 3 look-ahead) tokens minus the held overlap of audio.
    chunk_tokens: tuple[int, ...] = (15, 30, 60)
    # Past tokens the flow re-reads before the first frame still to emit (None: all of them).
    # 250 (10 s) bounds each piece's cost on long utterances; shorter ones see their whole prefix.
    context_tokens: int | None = 250
    # Mel frames (20 ms each) held back per piece and crossfaded into the next one; they are also
    # the vocoder's right context (4 frames left 3e-2 errors at joins on the fixture model, 6: 6e-3).
    overlap_frames: int = 6
    # Committed mel frames the vocoder re-reads left of each piece.
    hift_context_frames: int = 16

    def __post_init__(self) -> None:
        sizes = tuple(self.chunk_tokens)
        if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"chunk_tokens must be a non-empty sequence of integers >= 1, got {self.chunk_tokens!r}")
        object.__setattr__(self, "chunk_tokens", sizes)
        for name in ("overlap_frames", "hift_context_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        ctx = self.context_tokens
        if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 0):
            raise ValueError(f"context_tokens must be None or an integer >= 0, got {ctx!r}")

    def chunk_size(self, index: int) -> int:
        return self.chunk_tokens[min(index, len(self.chunk_tokens) - 1)]


@dataclass(eq=False)
class StreamState:
    """One utterance being streamed. Create with :func:`new_stream`; only this module mutates it."""

    voice: Voice
    n_timesteps: int
    seed: int
    schedule: StreamSchedule
    tokens: list[int] = field(default_factory=list)  # every speech token received so far
    finished: bool = False
    pieces: int = 0  # pieces computed so far
    tokens_at_last_piece: int = 0
    emitted_samples: int = 0  # = 480 * committed mel frames
    mel: torch.Tensor | None = None  # (80, M) committed mel frames (those whose audio was emitted)
    mel_tail: torch.Tensor | None = None  # (80, k) held frames after `mel`, from the last piece
    wav_tail: torch.Tensor | None = None  # (480 k,) the last piece's audio of the held frames
    source: torch.Tensor | None = None  # excitation of the last committed frames (vocoder left context)
    cycles: torch.Tensor | None = None  # (H,) float64 harmonic phases, in cycles, at the committed end

    @property
    def committed_frames(self) -> int:
        return 0 if self.mel is None else self.mel.shape[1]

    def is_ready(self, final: bool = False) -> bool:
        """Whether a call with no new tokens (and this ``final``) would compute a piece."""
        if self.finished:
            return False
        return final or len(self.tokens) - self.tokens_at_last_piece >= self.schedule.chunk_size(self.pieces)


def check_schedule(schedule: StreamSchedule, flow: FlowConfig) -> StreamSchedule:
    """``schedule`` if it is one this flow can stream with, else a ValueError naming the problem."""
    if not isinstance(schedule, StreamSchedule):
        raise ValueError(f"schedule must be a StreamSchedule, got {type(schedule).__name__}")
    if schedule.chunk_tokens[0] <= flow.pre_lookahead_len:
        raise ValueError(f"the first chunk must hold more than the {flow.pre_lookahead_len} look-ahead tokens, "
                         f"got chunk_tokens={schedule.chunk_tokens}")
    return schedule


def new_stream(s3gen: S3Gen, voice: Voice, *, n_timesteps: int = 10, seed: int | None = None,
               schedule: StreamSchedule | None = None) -> StreamState:
    """A fresh stream for ``voice``. ``seed=None`` draws one from torch's global RNG (so
    ``torch.manual_seed`` still makes the audio reproducible)."""
    if isinstance(n_timesteps, bool) or not isinstance(n_timesteps, int) or n_timesteps < 1:
        raise ValueError(f"n_timesteps must be an integer >= 1, got {n_timesteps!r}")
    if seed is None:
        seed = random_seed()
    check_stream_seed(seed)
    schedule = check_schedule(schedule or StreamSchedule(), s3gen.config.flow)
    check_voice(voice, 0, s3gen.config.flow.vocab_size, s3gen.config.flow.output_size,
                 s3gen.config.flow.spk_embed_dim)
    n_mels = s3gen.config.flow.output_size
    device = s3gen.device
    harmonics = s3gen.mel2wav.m_source.num_harmonics
    return StreamState(
        voice=voice, n_timesteps=n_timesteps, seed=seed, schedule=schedule,
        mel=torch.zeros(n_mels, 0, device=device, dtype=s3gen.dtype),
        mel_tail=torch.zeros(n_mels, 0, device=device, dtype=s3gen.dtype),
        wav_tail=torch.zeros(0, device=device),
        source=torch.zeros(0, device=device),
        cycles=torch.zeros(harmonics, dtype=torch.float64, device=device),
    )


@dataclass
class _Piece:
    """One ready stream's work in this call."""

    index: int  # position in the caller's items
    state: StreamState
    final: bool
    first_token: int  # speech tokens before it are not re-read (context window)
    tokens: torch.Tensor  # the speech tokens the flow reads
    first_frame: int  # generated-mel index of the flow's first output frame
    mel: torch.Tensor | None = None  # flow output, generated frames [first_frame, end)
    window: torch.Tensor | None = None  # vocoder input: left context + new frames
    source: torch.Tensor | None = None
    left: int = 0  # left-context frames in `window`
    commit: int = 0  # new frames whose audio is emitted now
    end_cycles: torch.Tensor | None = None
    fresh_source: torch.Tensor | None = None  # excitation of the committed new frames


@torch.inference_mode()
def vocode_stream_chunks(s3gen: S3Gen, items: Sequence[tuple[StreamState, Sequence[int] | torch.Tensor, bool]], *,
                         max_batch_frames: int = DEFAULT_MAX_BATCH_FRAMES) -> list[np.ndarray]:
    """Append each item's new tokens to its stream; make the next piece of every ready stream,
    all together; return the new audio per item (empty float32 array when none)."""
    checked = _check_items(s3gen, items)
    out = [np.zeros(0, dtype=np.float32) for _ in checked]
    pieces = []
    for index, (state, tokens, final) in enumerate(checked):
        state.tokens.extend(tokens)
        if not state.is_ready(final):
            continue
        if not state.tokens:
            state.finished = True  # final with no speech at all: nothing to say
            continue
        pieces.append(_plan(s3gen, index, state, final))

    pieces = [p for p in pieces if p is not None]
    if not pieces:
        return out
    # A piece before which its stream has no audio yet is what a listener is waiting for.
    with s3gen.compute_hold(first_audio=any(p.state.committed_frames == 0 for p in pieces)):
        _run_flow(s3gen, pieces, max_batch_frames)
        pieces = [p for p in pieces if _join_mel(s3gen, p)]
        for p, wav in zip(pieces, _run_vocoder(s3gen, pieces, max_batch_frames)):
            out[p.index] = _emit(s3gen, p, wav)
    return out


def _check_items(s3gen: S3Gen, items) -> list[tuple[StreamState, list[int], bool]]:
    checked, seen = [], set()
    vocab = s3gen.config.flow.vocab_size
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"item {i}: expected (state, new_tokens, final), got {item!r}")
        state, tokens, final = item
        if not isinstance(state, StreamState):
            raise ValueError(f"item {i}: expected a StreamState from new_stream, got {type(state).__name__}")
        if id(state) in seen:
            raise ValueError(f"item {i}: the same stream appears twice in one call")
        seen.add(id(state))
        if state.finished:
            raise ValueError(f"item {i}: the stream is finished (its final piece was made)")
        if not isinstance(final, (bool, np.bool_)):
            raise ValueError(f"item {i}: final must be a bool, got {final!r}")
        new = token_tensor(tokens, i, vocab).tolist() if len(tokens) else []
        checked.append((state, new, bool(final)))
    return checked


def _plan(s3gen: S3Gen, index: int, state: StreamState, final: bool) -> _Piece | None:
    ratio = s3gen.config.flow.token_mel_ratio
    lookahead = s3gen.config.flow.pre_lookahead_len
    tp, tm = state.voice.prompt_token.shape[1], state.voice.prompt_feat.shape[1]
    done = state.committed_frames
    first = 0
    # Windowing keeps frame positions aligned only for voices with 2 mel frames per prompt token
    # (+1 odd frame, as the voice builder makes them); other voices always see the whole prefix.
    if state.schedule.context_tokens is not None and 0 <= tm - ratio * tp <= 1:
        # The token whose frames start at generated frame `done`, minus the context; the flow's
        # first output frame must not come after `done`.
        first = max(0, (tm + done) // ratio - tp - state.schedule.context_tokens)
        first = min(first, done // ratio)
    n = len(state.tokens)
    usable = n if final else n - lookahead
    end = ratio * (tp + usable) - tm  # generated frames this piece can reach
    state.pieces += 1
    state.tokens_at_last_piece = n
    if end <= done:
        if final:  # nothing beyond what is out already (only reachable with odd voices)
            state.finished = True
        return None
    return _Piece(index=index, state=state, final=final, first_token=first,
                  tokens=torch.tensor(state.tokens[first:], dtype=torch.int64, device=s3gen.device),
                  first_frame=ratio * first)


def _run_flow(s3gen: S3Gen, pieces: list[_Piece], max_batch_frames: int) -> None:
    ratio = s3gen.config.flow.token_mel_ratio
    for steps in sorted({p.state.n_timesteps for p in pieces}):
        same = [p for p in pieces if p.state.n_timesteps == steps]
        frames = [ratio * (p.state.voice.prompt_token.shape[1] + len(p.tokens)) for p in same]
        for group in length_groups(frames, max_batch_frames):
            batch = [same[i] for i in group]
            voices = [p.state.voice for p in batch]
            inputs = s3gen.flow.prepare(
                [p.tokens for p in batch], [v.prompt_token[0].to(s3gen.device) for v in voices],
                [v.prompt_feat[0].to(s3gen.device) for v in voices],
                torch.cat([v.embedding for v in voices]).to(s3gen.device),
                hold_back=[not p.final for p in batch])
            noise = torch.zeros_like(inputs.mu)
            for i, p in enumerate(batch):
                noise[i, :, :inputs.frames[i]] = _flow_noise(p, inputs.frames[i], ratio, s3gen.config.flow.output_size)
            mel = s3gen.flow(inputs, noise, steps)
            for i, p in enumerate(batch):
                p.mel = mel[i, :, inputs.prompt_frames[i]:inputs.frames[i]]


def _flow_noise(p: _Piece, frames: int, ratio: int, n_mels: int) -> torch.Tensor:
    """Noise of the piece's flow frames at their positions in the whole utterance's frame grid."""
    prompt = ratio * p.state.voice.prompt_token.shape[1]
    skipped = p.first_frame  # frames of the tokens left out of the context window
    return torch.cat([flow_noise(p.state.seed, 0, prompt, n_mels),
                      flow_noise(p.state.seed, prompt + skipped, frames + skipped, n_mels)], dim=1)


def _ramp(n: int, device: torch.device) -> torch.Tensor:
    """Raised-cosine weights of the newer signal across an n-sample crossfade (0 < w < 1)."""
    i = torch.arange(1, n + 1, device=device, dtype=torch.float32)
    return 0.5 - 0.5 * torch.cos(math.pi * i / (n + 1))


def _join_mel(s3gen: S3Gen, p: _Piece) -> bool:
    """Crossfade the held frames into the new mel, split it into committed and held frames and
    lay out the vocoder window and its excitation. False when no new frame arrived."""
    state = p.state
    done = state.committed_frames
    new = p.mel[:, done - p.first_frame:].clone()
    if new.shape[1] == 0:
        state.finished = p.final
        return False
    overlap = min(state.mel_tail.shape[1], new.shape[1])
    if overlap:
        w = _ramp(overlap, new.device).to(new.dtype)
        new[:, :overlap] = state.mel_tail[:, :overlap] * (1 - w) + new[:, :overlap] * w
    held = 0 if p.final else min(state.schedule.overlap_frames, new.shape[1])
    p.commit = new.shape[1] - held
    p.left = min(state.schedule.hift_context_frames, done)
    p.window = torch.cat([state.mel[:, done - p.left:], new], dim=1)

    hift = s3gen.mel2wav
    spf = hift.samples_per_frame
    f0 = hift.item_f0(p.window)[p.left:]
    parts = [state.source[state.source.shape[0] - spf * p.left:]]
    p.end_cycles = state.cycles
    if p.commit:
        p.fresh_source, p.end_cycles = hift.positional_source(f0[:p.commit], state.seed, done, state.cycles)
        parts.append(p.fresh_source)
    else:
        p.fresh_source = state.source[:0]
    if held:
        parts.append(hift.positional_source(f0[p.commit:], state.seed, done + p.commit, p.end_cycles)[0])
    p.source = torch.cat(parts)
    return True


def _run_vocoder(s3gen: S3Gen, pieces: list[_Piece], max_batch_frames: int) -> list[torch.Tensor]:
    wavs: list[torch.Tensor | None] = [None] * len(pieces)
    for group in length_groups([p.window.shape[1] for p in pieces], max_batch_frames):
        mels = [pieces[i].window for i in group]
        lengths = torch.tensor([m.shape[1] for m in mels], device=s3gen.device)
        out = s3gen.mel2wav.inference(pad_mels(mels, s3gen.device, s3gen.dtype), lengths,
                                      sources=[pieces[i].source for i in group])
        for i, wav in zip(group, out):
            wavs[i] = wav
    return wavs


def _emit(s3gen: S3Gen, p: _Piece, wav: torch.Tensor) -> np.ndarray:
    """Crossfade the held audio, cut off the piece to emit, fade in the utterance's start, update the state."""
    state = p.state
    spf = s3gen.mel2wav.samples_per_frame
    new = wav[spf * p.left:].clone()
    overlap = min(state.wav_tail.shape[0], new.shape[0])
    if overlap:
        w = _ramp(overlap, new.device)
        new[:overlap] = state.wav_tail[:overlap] * (1 - w) + new[:overlap] * w
    piece = new[:spf * p.commit]
    start = state.emitted_samples
    fade = s3gen.trim_fade
    if start < fade.shape[0] and piece.shape[0]:
        n = min(piece.shape[0], fade.shape[0] - start)
        piece = torch.cat([piece[:n] * fade[start:start + n].to(piece.dtype), piece[n:]])

    committed = p.window[:, p.left:p.left + p.commit]
    state.mel = torch.cat([state.mel, committed], dim=1)
    state.mel_tail = p.window[:, p.left + p.commit:]
    state.wav_tail = new[spf * p.commit:]
    keep = spf * state.schedule.hift_context_frames
    source = torch.cat([state.source, p.fresh_source])
    state.source = source[max(0, source.shape[0] - keep):]
    state.cycles = p.end_cycles
    state.emitted_samples += piece.shape[0]
    state.finished = p.final
    return piece.float().cpu().numpy()
