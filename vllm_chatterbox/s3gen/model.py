"""S3Gen front door: speech tokens + voices -> 24 kHz waveforms, batched.

``S3Gen`` = the flow (tokens -> mel, :mod:`vllm_chatterbox.s3gen.flow`) + the HiFT vocoder
(mel -> waveform). Requests are grouped by length (sorted, with a cap on padded frames per
batch) so padding stays small; each group runs as one padded batch through the flow and the
vocoder. Outputs come back in input order and equal running each item alone, up to float
rounding. On a CPU the default cap is one clip per batch (batching there only adds padding);
GPUs batch.

Loads the ``flow.*`` and ``mel2wav.*`` entries of the official ``s3gen.safetensors`` (the
``tokenizer.*`` / ``speaker_encoder.*`` entries belong to the voice side and are skipped).

Precision (``dtype``, see :data:`S3GEN_DTYPES`): "float32" (default) is the exact path.
"bfloat16" runs the two heavy parts in bf16: the CFM estimator (10 steps x 2 CFG rows over
prompt + generated frames, nearly all of S3Gen's work) and HiFT's convolution stack, with fp32
islands where faithfulness needs them (LayerNorms, time embeddings, the solver state, HiFT's f0
and source path, STFT / iSTFT). The conformer encoder runs once per call (a few % of the work)
and stays fp32, as do the input and output of every stage: mels and waveforms are fp32. bf16
pays off only where the hardware computes bf16 natively (CUDA, CPUs with AVX512-BF16 / AMX);
on an AVX2-only CPU PyTorch's bf16 matmuls and convolutions are several times slower than fp32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vllm_chatterbox.config import ChatterboxConfig
from vllm_chatterbox.model_files import load_safetensors, load_torch_file
from vllm_chatterbox.s3gen.flow import CausalMaskedDiffWithXvec
from vllm_chatterbox.s3gen.hift import HiFTGenerator, trim_fade
from vllm_chatterbox.s3gen.inputs import check_stream_seed, check_voice, pad_mels, random_seed, token_tensor
from vllm_chatterbox.s3gen.meanflow import meanflow_noise
from vllm_chatterbox.s3gen.noise import flow_noise
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

VOICE_SIDE_PREFIXES = ("tokenizer.", "speaker_encoder.")
S3GEN_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_MAX_BATCH_FRAMES = 8192  # batch size x longest item, in 50 Hz frames (CFG rows not counted)
# On a CPU one clip per call: every conv and matmul of one clip already fills the cores, so a
# padded batch only adds the padding (bench/s3gen.py: batched 0.75-0.89x of one clip at a time).
CPU_MAX_BATCH_FRAMES = 1


def _no_hold(first_audio: bool = False) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


class S3Gen(nn.Module):
    def __init__(self, config: ChatterboxConfig):
        super().__init__()
        self.config = config
        self.flow = CausalMaskedDiffWithXvec(config.flow, config.estimator)
        self.mel2wav = HiFTGenerator(config.hift)
        self.register_buffer("trim_fade", trim_fade(), persistent=False)
        # A context manager factory entered around each compute call (a length group of
        # inference, a streaming vocoder call; ``first_audio``: the call makes a stream's first
        # audio). ChatterboxTTS sets it to hold T3's engine while S3Gen computes on a CPU it
        # shares with the engine (t3/cpu_turns.py).
        self.compute_hold = _no_hold
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.flow.input_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of mels, noise and waveforms in and out (fp32 in both precisions)."""
        return self.flow.input_embedding.weight.dtype

    @property
    def default_max_batch_frames(self) -> int:
        """The length-group cap used when a call gives none: batches on GPUs, one clip per call on CPUs."""
        return CPU_MAX_BATCH_FRAMES if self.device.type == "cpu" else DEFAULT_MAX_BATCH_FRAMES

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the CFM estimator and HiFT's convolutions run in."""
        return self.flow.decoder.estimator.compute_dtype

    def set_compute_dtype(self, dtype: str | torch.dtype) -> None:
        """Run the estimator and HiFT's convolution stack in ``dtype`` ("float32" / "bfloat16").

        Going back from bfloat16 to float32 keeps the bf16-rounded weights: load the model again
        (``from_file``) for the exact path."""
        dtype = s3gen_dtype(dtype)
        self.flow.decoder.estimator.set_compute_dtype(dtype)
        self.mel2wav.set_compute_dtype(dtype)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_file(cls, source: str | Path | dict[str, torch.Tensor], config: ChatterboxConfig,
                  device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32") -> "S3Gen":
        """Build from an official ``s3gen.safetensors`` / ``s3gen.pt`` path or an already loaded state
        dict; ``dtype`` "float32" (exact) or "bfloat16" (see the module docstring)."""
        dtype = s3gen_dtype(dtype)
        state_dict = _read_state_dict(source) if isinstance(source, (str, Path)) else source
        model = cls(config)
        model.load_official_state_dict(state_dict)
        model.set_compute_dtype(dtype)
        return model.to(device)

    def load_official_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        flow_sd, hift_sd, unknown = {}, {}, []
        for key, value in state_dict.items():
            if key.startswith("flow."):
                flow_sd[key[len("flow."):]] = value
            elif key.startswith("mel2wav."):
                hift_sd[key[len("mel2wav."):]] = value
            elif not key.startswith(VOICE_SIDE_PREFIXES):
                unknown.append(key)
        if unknown:
            raise ValueError(f"s3gen state dict has {len(unknown)} unexpected key(s): {_preview(unknown)}")

        expected = self.flow.state_dict()
        missing = [f"flow.{k}" for k in expected if k not in flow_sd]
        unexpected = [f"flow.{k}" for k in flow_sd if k not in expected]
        if missing:
            raise ValueError(f"s3gen state dict lacks {len(missing)} flow key(s): {_preview(missing)}")
        if unexpected:
            raise ValueError(f"s3gen state dict has {len(unexpected)} unexpected flow key(s) "
                             f"(a meanflow checkpoint?): {_preview(unexpected)}")
        wrong_shape = [f"flow.{k} {tuple(flow_sd[k].shape)} != {tuple(v.shape)}"
                       for k, v in expected.items() if flow_sd[k].shape != v.shape]
        if wrong_shape:
            raise ValueError(f"s3gen flow tensors have unexpected shapes (wrong config?): {_preview(wrong_shape)}")
        self.flow.load_state_dict(flow_sd, strict=True)
        self.mel2wav.load_official_state_dict(hift_sd)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """``flow.*`` and ``mel2wav.*`` under the official names (weight norm as ``parametrizations.*``)."""
        out = {f"flow.{k}": v for k, v in self.flow.state_dict().items()}
        out.update({f"mel2wav.{k}": v for k, v in self.mel2wav.official_state_dict().items()})
        return out

    # ---------------------------------------------------------------- inference

    @torch.inference_mode()
    def tokens_to_mel(self, token_lists: Sequence[Sequence[int] | torch.Tensor], voices: Sequence[Voice], *,
                      n_timesteps: int | None = None, noise: Sequence[torch.Tensor] | None = None,
                      generators: Sequence[torch.Generator | None] | None = None,
                      seeds: Sequence[int | None] | None = None,
                      max_batch_frames: int | None = None) -> list[torch.Tensor]:
        """Mel (80, 2*(Tp+Ts) - Tm) per item, in input order (Tp/Tm: the voice's prompt tokens/frames).

        ``max_batch_frames``: cap of batch size x longest item per padded batch (default:
        :attr:`default_max_batch_frames`)."""
        if n_timesteps is None:
            n_timesteps = self.config.estimator.default_n_timesteps  # 10; meanflow (Turbo) 2
        items = self._prepare_items(token_lists, voices, n_timesteps, noise, generators, seeds)
        mels: list[torch.Tensor | None] = [None] * len(items)
        for group in length_groups([it.frames for it in items], self._batch_cap(max_batch_frames)):
            for i, mel in zip(group, self._flow_batch([items[i] for i in group], n_timesteps)):
                mels[i] = mel
        return mels

    @torch.inference_mode()
    def vocode(self, mels: Sequence[torch.Tensor], generators: Sequence[torch.Generator | None] | None = None,
               sources: Sequence[torch.Tensor] | None = None,
               seeds: Sequence[int | None] | None = None) -> list[torch.Tensor]:
        """Mels (80, T_i) -> waveforms (480*T_i,) with the start fade applied, as one padded batch.

        The excitation comes from ``sources``, else from ``seeds`` (positional noise, as a stream
        draws it), else from ``generators`` (the original's draw order)."""
        if not mels:
            raise ValueError("mels is empty: nothing to vocode")
        if sources is None and seeds is not None:
            if len(seeds) != len(mels):
                raise ValueError(f"seeds has {len(seeds)} entries for {len(mels)} mels")
            seeds = [random_seed() if seed is None else check_stream_seed(seed, "seed") for seed in seeds]
            sources = [self.mel2wav.positional_source(self.mel2wav.item_f0(mel), seed)[0]
                       for mel, seed in zip(mels, seeds)]
        lengths = [m.shape[-1] for m in mels]
        batch = pad_mels(mels, self.device, self.dtype)
        wavs = self.mel2wav.inference(batch, torch.tensor(lengths, device=self.device),
                                      generators=None if generators is None else list(generators),
                                      sources=None if sources is None else list(sources))
        return [self._fade_in(w) for w in wavs]

    @torch.inference_mode()
    def inference(self, token_lists: Sequence[Sequence[int] | torch.Tensor], voices: Sequence[Voice], *,
                  n_timesteps: int | None = None, noise: Sequence[torch.Tensor] | None = None,
                  generators: Sequence[torch.Generator | None] | None = None,
                  seeds: Sequence[int | None] | None = None,
                  max_batch_frames: int | None = None) -> list[np.ndarray]:
        """Speech tokens (ids < 6561) per item + its voice -> float32 24 kHz waveforms, in input order.

        ``noise[i]``: the initial CFM noise of item i, shape (80, 2*(Tp_i + Ts_i)) covering the
        prompt frames too (the original's ``randn_like(mu)``). Without it the noise is drawn
        from ``generators[i]`` (or the global RNG), followed by the vocoder's own draws; given
        noise takes precedence over generators for the CFM (the vocoder still uses them).
        ``seeds[i]`` (instead of generators) makes every draw a function of (seed, frame), as a
        stream draws it (:mod:`vllm_chatterbox.s3gen.noise`), so the result does not depend on
        how the utterance is cut into pieces and matches :mod:`vllm_chatterbox.s3gen.streaming`;
        a ``None`` seed is drawn from torch's global RNG. ``max_batch_frames`` caps batch size x
        longest item per padded batch (default: :attr:`default_max_batch_frames`).
        """
        if n_timesteps is None:
            n_timesteps = self.config.estimator.default_n_timesteps  # 10; meanflow (Turbo) 2
        items = self._prepare_items(token_lists, voices, n_timesteps, noise, generators, seeds)
        groups = length_groups([it.frames for it in items], self._batch_cap(max_batch_frames))
        logger.debug("s3gen: %d items in %d length groups of sizes %s", len(items), len(groups), [len(g) for g in groups])
        wavs: list[np.ndarray | None] = [None] * len(items)
        for group in groups:
            group_generators = None if generators is None else [generators[i] for i in group]
            group_seeds = None if seeds is None else [items[i].seed for i in group]
            with self.compute_hold():
                mels = self._flow_batch([items[i] for i in group], n_timesteps)
                group_wavs = self.vocode(mels, generators=group_generators, seeds=group_seeds)
            for i, wav in zip(group, group_wavs):
                wavs[i] = wav.float().cpu().numpy()
        return wavs

    # ----------------------------------------------------------------- helpers

    def _batch_cap(self, max_batch_frames: int | None) -> int:
        return self.default_max_batch_frames if max_batch_frames is None else max_batch_frames

    def _fade_in(self, wav: torch.Tensor) -> torch.Tensor:
        n = min(wav.shape[-1], self.trim_fade.shape[0])
        return torch.cat([wav[:n] * self.trim_fade[:n].to(wav.dtype), wav[n:]])

    def _flow_batch(self, items: list[_Item], n_timesteps: int) -> list[torch.Tensor]:
        inputs = self.flow.prepare(
            [it.tokens for it in items], [it.voice.prompt_token[0].to(self.device) for it in items],
            [it.voice.prompt_feat[0].to(self.device) for it in items],
            torch.cat([it.voice.embedding for it in items]).to(self.device))
        noise = torch.zeros_like(inputs.mu)
        for i, it in enumerate(items):
            noise[i, :, :it.frames] = it.noise
        mel = self.flow(inputs, noise, n_timesteps)
        return [mel[i, :, inputs.prompt_frames[i]:inputs.frames[i]] for i in range(len(items))]

    def _prepare_items(self, token_lists: Sequence[Sequence[int] | torch.Tensor], voices: Sequence[Voice],
                       n_timesteps: int, noise: Sequence[torch.Tensor] | None,
                       generators: Sequence[torch.Generator | None] | None,
                       seeds: Sequence[int | None] | None = None) -> list[_Item]:
        if isinstance(n_timesteps, bool) or not isinstance(n_timesteps, int) or n_timesteps < 1:
            raise ValueError(f"n_timesteps must be an integer >= 1, got {n_timesteps!r}")
        n = len(token_lists)
        if n == 0:
            raise ValueError("token_lists is empty: nothing to synthesise")
        if len(voices) != n:
            raise ValueError(f"got {n} token lists but {len(voices)} voices")
        for name, per_item in (("noise", noise), ("generators", generators), ("seeds", seeds)):
            if per_item is not None and len(per_item) != n:
                raise ValueError(f"{name} has {len(per_item)} entries for {n} items")
        if seeds is not None:
            if generators is not None:
                raise ValueError("pass generators or seeds, not both")
            for i, seed in enumerate(seeds):
                if seed is not None:
                    check_stream_seed(seed, f"seeds[{i}]")

        vocab = self.config.flow.vocab_size
        n_mels = self.config.flow.output_size
        ratio = self.config.flow.token_mel_ratio
        # S3Gen's memory grows about quadratically with an item's length (full attention over
        # its frames); T3 never makes more than max_speech_tokens, so longer input is refused.
        max_tokens = self.config.t3.max_speech_tokens
        checked = []
        for i, (tokens, voice) in enumerate(zip(token_lists, voices)):
            tokens = token_tensor(tokens, i, vocab)
            if tokens.shape[0] > max_tokens:
                raise ValueError(f"item {i}: {tokens.shape[0]} speech tokens; the model's maximum is {max_tokens} "
                                 f"({max_tokens // self.config.s3_tokenizer.token_rate} s); split longer text (generate_long)")
            check_voice(voice, i, vocab, n_mels, self.config.flow.spk_embed_dim)
            frames = ratio * (voice.prompt_token.shape[1] + tokens.shape[0])
            prompt_frames = voice.prompt_feat.shape[1]
            if frames <= prompt_frames:
                raise ValueError(f"item {i}: {tokens.shape[0]} tokens give {frames} frames with the voice's "
                                 f"{voice.prompt_token.shape[1]} prompt tokens, not more than its "
                                 f"{prompt_frames} prompt mel frames; nothing would be generated")
            if noise is not None:
                z = torch.as_tensor(noise[i])
                if z.dim() == 3 and z.shape[0] == 1:
                    z = z[0]
                if tuple(z.shape) != (n_mels, frames):
                    raise ValueError(f"noise[{i}] has shape {tuple(torch.as_tensor(noise[i]).shape)}, "
                                     f"expected ({n_mels}, {frames}) = (mels, 2 * (prompt + speech tokens))")
                checked.append((tokens, voice, frames, z))
            else:
                checked.append((tokens, voice, frames, None))

        # Noise is drawn only after every item validated, in input order, so a rejected call
        # leaves the RNG streams untouched.
        items = []
        for i, (tokens, voice, frames, z) in enumerate(checked):
            seed = None
            if seeds is not None:
                seed = random_seed() if seeds[i] is None else seeds[i]
            if z is None and seed is not None:
                z = flow_noise(seed, 0, frames, n_mels)
            elif z is None:
                g = None if generators is None else generators[i]
                if self.config.estimator.meanflow:
                    z = meanflow_noise(n_mels, frames, ratio * tokens.shape[0], g, self.device)
                else:
                    z = torch.randn((n_mels, frames), generator=g, device=g.device if g is not None else self.device)
            items.append(_Item(tokens.to(self.device), voice, z.to(self.device, self.dtype), frames, seed))
        return items


@dataclass(frozen=True)
class _Item:
    tokens: torch.Tensor  # (Ts,) int64 on the model device
    voice: Voice
    noise: torch.Tensor  # (80, frames) initial CFM noise
    frames: int  # 2 * (prompt tokens + speech tokens)
    seed: int | None  # positional-noise seed, when drawing that way


def s3gen_dtype(value: str | torch.dtype) -> torch.dtype:
    """"float32" / "bfloat16" (or those torch dtypes) -> the torch dtype; anything else is a ValueError."""
    if isinstance(value, torch.dtype) and value in S3GEN_DTYPES.values():
        return value
    if isinstance(value, str) and value in S3GEN_DTYPES:
        return S3GEN_DTYPES[value]
    raise ValueError(f"s3gen dtype must be one of {sorted(S3GEN_DTYPES)}, got {value!r}")


def length_groups(frames: list[int], max_batch_frames: int) -> list[list[int]]:
    """Indices sorted by length, cut into runs whose count x longest stays <= max_batch_frames."""
    if max_batch_frames < 1:
        raise ValueError(f"max_batch_frames must be >= 1, got {max_batch_frames}")
    groups: list[list[int]] = []
    for i in sorted(range(len(frames)), key=lambda j: frames[j]):
        # Sorted ascending, so item i is the longest of any group it joins.
        if groups and (len(groups[-1]) + 1) * frames[i] <= max_batch_frames:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"s3gen checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    state = load_torch_file(path, "s3gen checkpoint")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def _preview(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")
