"""HiFT vocoder (``s3gen.mel2wav``): 80-bin mel at 50 frames/s -> 24 kHz waveform.

An f0 predictor drives a neural-source-filter excitation; its STFT is fused into a HiFi-GAN
style upsampler whose output is a magnitude/phase spectrogram inverted by a small iSTFT.

Batching: items of different lengths are zero-padded to one batch. Every convolution here pads
with zeros, so re-zeroing each item's frames past its own length after every convolution makes
the padded batch see exactly what a single item sees; the reflect padding of the source STFT and
the iSTFT window normalisation are done per item. Only the small f0 predictor runs per item
(see ``_f0_per_item``).

Precision (:meth:`HiFTGenerator.set_compute_dtype`): in bfloat16 only the convolution stack
(conv_pre, upsamplers, resblocks, source downsamplers, conv_post) runs in bf16. The f0 predictor
and the source module (whose phase integrates f0 over the whole item), the STFT of the source,
the exp / sin of conv_post's output and the iSTFT stay in fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vllm_chatterbox.config import HiFTConfig
from vllm_chatterbox.s3gen.estimator import upcast
from vllm_chatterbox.s3gen.hift_source import SourceModule
from vllm_chatterbox.s3gen.noise import source_noise, source_phases

_PARAM_G = ".parametrizations.weight.original0"
_PARAM_V = ".parametrizations.weight.original1"
_LEGACY_G = ".weight_g"
_LEGACY_V = ".weight_v"


def trim_fade(n: int = 960) -> Tensor:
    """Fade applied to the start of every output: n/2 zeros, then a raised-cosine fade-in."""
    half = n // 2
    fade = torch.zeros(n)
    fade[half:] = (torch.cos(torch.linspace(math.pi, 0, half)) + 1) / 2
    return fade


def stft_window(n_fft: int, device: torch.device | None = None) -> Tensor:
    """fp32 periodic Hann, rounded from float64 like scipy's get_window('hann', fftbins=True).

    Not a buffer, so casting the module to half precision cannot round it.
    """
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device=device).float()


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


@dataclass(frozen=True)
class _Lengths:
    """Per-item mel lengths, on the host (for sizes) and on the model's device (for masks)."""

    host: list[int]
    device: Tensor

    def mask(self, scale: int, extra: int, size: int, dtype: torch.dtype) -> Tensor | None:
        """(B, 1, size) ones on each item's first ``scale * length + extra`` positions; None
        when no item is padded."""
        if all(scale * n + extra == size for n in self.host):
            return None
        positions = torch.arange(size, device=self.device.device)
        valid = self.device * scale + extra
        return (positions[None, :] < valid[:, None]).to(dtype)[:, None, :]


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha with a learned per-channel alpha (linear scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d,
                      padding=d * (kernel_size - 1) // 2)
            for d in dilations)
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
            for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, self.activations1,
                                            self.activations2):
            h = _masked(conv1(act1(x)), mask)
            x = x + _masked(conv2(act2(h)), mask)
        return x


class F0Predictor(nn.Module):
    """Five conv+ELU layers and a linear head; |output| is f0 in Hz per mel frame."""

    def __init__(self, in_channels: int, channels: int, num_layers: int = 5):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Conv1d(in_channels if i == 0 else channels, channels, 3, padding=1),
                       nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, 1)

    def forward(self, mel: Tensor) -> Tensor:
        """mel (B, 80, T) -> f0 (B, T)."""
        return torch.abs(self.classifier(self.condnet(mel).transpose(1, 2)).squeeze(-1))


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        self.n_fft = cfg.istft_n_fft
        self.hop = cfg.istft_hop_length
        rates = cfg.upsample_rates
        # Output samples per mel frame (480 for the released model).
        self.samples_per_frame = math.prod(rates) * self.hop

        self.f0_predictor = F0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        self.m_source = SourceModule(cfg, self.samples_per_frame)
        base = cfg.base_channels
        self.conv_pre = nn.Conv1d(cfg.in_channels, base, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(base // 2**i, base // 2**(i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(rates, cfg.upsample_kernel_sizes)))

        # The source spectrogram (hop 4 at 24 kHz) is downsampled to each upsampling stage's rate.
        stft_channels = self.n_fft + 2
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (k, d) in enumerate(zip(cfg.source_resblock_kernel_sizes,
                                       cfg.source_resblock_dilation_sizes)):
            ch = base // 2**(i + 1)
            stride = math.prod(rates[i + 1:])
            if stride == 1:
                self.source_downs.append(nn.Conv1d(stft_channels, ch, 1))
            else:
                self.source_downs.append(
                    nn.Conv1d(stft_channels, ch, 2 * stride, stride, padding=stride // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))

        self.resblocks = nn.ModuleList(
            ResBlock(base // 2**(i + 1), k, d)
            for i in range(len(rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        self.conv_post = nn.Conv1d(base // 2**len(rates), stft_channels, 7, padding=3)

    # ---- weights ---------------------------------------------------------------------------

    def _weight_normed_names(self) -> list[str]:
        """Convs the original wraps in weight norm: all of them except ``source_downs``."""
        return [name for name, m in self.named_modules()
                if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))
                and not name.startswith("source_downs.")]

    def load_official_state_dict(self, sd: dict[str, Tensor]) -> None:
        """Load keys relative to ``mel2wav.``; weight norm (either spelling) is folded here."""
        folded = fold_weight_norm(sd)
        expected = set(self.state_dict())
        missing = sorted(expected - set(folded))
        unexpected = sorted(set(folded) - expected)
        if missing or unexpected:
            raise ValueError(
                f"HiFT state dict mismatch: missing {missing}, unexpected {unexpected}")
        self.load_state_dict(folded)

    def official_state_dict(self) -> dict[str, Tensor]:
        """State dict in the official spelling (``parametrizations.weight.original0/1``)."""
        sd = {k: v.detach().clone() for k, v in self.state_dict().items()}
        for name in self._weight_normed_names():
            w = sd.pop(f"{name}.weight")
            sd[name + _PARAM_G] = w.flatten(1).norm(dim=1).view(-1, *[1] * (w.dim() - 1))
            sd[name + _PARAM_V] = w
        return sd

    # ---- precision -------------------------------------------------------------------------

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Run the convolution stack in ``dtype``; the f0 / source path stays in fp32."""
        self.to(dtype)
        self.f0_predictor.float()
        self.m_source.float()

    # ---- inference -------------------------------------------------------------------------

    @torch.no_grad()
    def inference(self, mel: Tensor, mel_lengths: Tensor,
                  generators: list[torch.Generator | None] | None = None,
                  sources: list[Tensor] | None = None) -> list[Tensor]:
        """mel (B, 80, T) with per-item lengths -> B fp32 waveforms of samples_per_frame * length_i.

        ``sources[i]`` (1, 1, N_i) replaces item i's random excitation; otherwise the excitation's
        random draws come from ``generators[i]`` (global RNG when None). No trim fade is applied.
        """
        lengths = self._check_inputs(mel, mel_lengths, generators, sources)
        batch, _, frames = mel.shape
        num_samples = frames * self.samples_per_frame
        mel = mel.to(self.f0_predictor.classifier.weight.dtype)
        mel = _masked(mel, lengths.mask(1, 0, frames, mel.dtype))

        if sources is None:
            source = self.excitation(self._f0_per_item(mel, lengths.host), lengths.host,
                                     generators or [None] * batch)
        else:
            source = mel.new_zeros(batch, 1, num_samples, dtype=torch.float32)
            for i, (s, n) in enumerate(zip(sources, lengths.host)):
                source[i, 0, :n * self.samples_per_frame] = s.reshape(-1)
        wav = self._decode(mel, source, lengths)
        return [wav[i, :n * self.samples_per_frame] for i, n in enumerate(lengths.host)]

    def _check_inputs(self, mel: Tensor, mel_lengths: Tensor,
                      generators: list[torch.Generator | None] | None,
                      sources: list[Tensor] | None) -> _Lengths:
        if mel.dim() != 3 or mel.shape[1] != self.cfg.in_channels:
            raise ValueError(f"mel must be (B, {self.cfg.in_channels}, T), got {tuple(mel.shape)}")
        batch, _, frames = mel.shape
        if mel_lengths.shape != (batch,) or mel_lengths.is_floating_point():
            raise ValueError(f"mel_lengths must be ({batch},) integers, got "
                             f"{tuple(mel_lengths.shape)} {mel_lengths.dtype}")
        lengths = [int(n) for n in mel_lengths.tolist()]  # the one host sync: output sizes
        if any(n < 1 or n > frames for n in lengths):
            raise ValueError(f"mel_lengths must lie in [1, {frames}], got {lengths}")
        if generators is not None and len(generators) != batch:
            raise ValueError(f"expected {batch} generators, got {len(generators)}")
        if sources is not None:
            if len(sources) != batch:
                raise ValueError(f"expected {batch} sources, got {len(sources)}")
            for i, (s, n) in enumerate(zip(sources, lengths)):
                if s.numel() != n * self.samples_per_frame:
                    raise ValueError(f"sources[{i}] must hold {n * self.samples_per_frame} "
                                     f"samples (1, 1, N), got shape {tuple(s.shape)}")
        return _Lengths(lengths, mel_lengths.to(mel.device, torch.long))

    def _f0_per_item(self, mel: Tensor, lengths: list[int]) -> Tensor:
        """f0 (B, T), zero past each length, predicted one item at a time.

        The excitation's phase integrates f0 over the whole item, so the 1-ulp differences that
        batched convs (shape-dependent kernels) give would grow along the item; a per-item call
        has the shape of a single run and is bit-identical to it. The predictor is a small part
        of the vocoder's work.
        """
        f0 = mel.new_zeros(mel.shape[0], mel.shape[-1])
        for i, n in enumerate(lengths):
            f0[i, :n] = self.item_f0(mel[i, :, :n])
        return f0

    @torch.no_grad()
    def item_f0(self, mel: Tensor) -> Tensor:
        """One item's mel (80, T) -> f0 (T,) in Hz (a batch-of-one call: see ``_f0_per_item``)."""
        return self.f0_predictor(mel[None].to(self.f0_predictor.classifier.weight.dtype))[0]

    @torch.no_grad()
    def positional_source(self, f0: Tensor, seed: int, start_frame: int = 0,
                          start_cycles: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Excitation (samples_per_frame * T,) of mel frames [start_frame, start_frame + T) with f0 (T,),
        its noise a function of (seed, frame) (:mod:`vllm_chatterbox.s3gen.noise`) and its phase
        continuing from ``start_cycles`` (H,) (zero: the item's start). Returns it and the end cycles."""
        frames = f0.shape[-1]
        harmonics = self.m_source.num_harmonics
        if start_cycles is None:
            start_cycles = torch.zeros(harmonics, dtype=torch.float64)
        noise = source_noise(seed, start_frame, start_frame + frames, harmonics, self.samples_per_frame)
        phases = source_phases(seed, harmonics)
        return self.m_source.continued(f0, start_cycles, phases.to(f0.device), noise.to(f0.device))

    def excitation(self, f0: Tensor, lengths: list[int],
                   generators: list[torch.Generator | None]) -> Tensor:
        """f0 (B, T) -> NSF excitation (B, 1, N); item i's random draws from generators[i].

        A generator on another device than f0 (e.g. CPU for a CUDA model) works, at the cost of
        a copy of the item's noise.
        """
        batch, frames = f0.shape
        num_samples = frames * self.samples_per_frame
        phases = f0.new_zeros(batch, self.m_source.num_harmonics, 1, dtype=torch.float32)
        noise = f0.new_zeros(batch, self.m_source.num_harmonics, num_samples, dtype=torch.float32)
        for i, (n, gen) in enumerate(zip(lengths, generators)):
            phases[i], noise[i, :, :n * self.samples_per_frame] = self.m_source.draw_noise(
                n * self.samples_per_frame, gen, f0.device)
        return self.m_source(f0, phases, noise)

    def _decode(self, mel: Tensor, source: Tensor, lengths: _Lengths) -> Tensor:
        """mel (B, 80, T) zero past each length, source (B, 1, N) -> fp32 waveform (B, N), clamped.

        Samples past an item's length are meaningless.
        """
        frames = mel.shape[-1]
        mel = mel.to(self.conv_pre.weight.dtype)
        stft = self._stft(source[:, 0].float(), lengths).to(mel.dtype)

        x = _masked(self.conv_pre(mel), lengths.mask(1, 0, frames, mel.dtype))
        scale = 1
        last = len(self.ups) - 1
        for i, up in enumerate(self.ups):
            scale *= self.cfg.upsample_rates[i]
            x = up(F.leaky_relu(x, self.cfg.lrelu_slope))
            if i == last:
                x = F.pad(x, (1, 0), mode="reflect")
            mask = lengths.mask(scale, int(i == last), x.shape[-1], x.dtype)
            x = _masked(x, mask)
            s = _masked(self.source_downs[i](stft), mask)
            x = x + self.source_resblocks[i](s, mask)
            blocks = self.resblocks[i * len(self.cfg.resblock_kernel_sizes):
                                    (i + 1) * len(self.cfg.resblock_kernel_sizes)]
            acc = blocks[0](x, mask)
            for block in blocks[1:]:
                acc = acc + block(x, mask)
            x = acc / len(blocks)

        x = upcast(self.conv_post(F.leaky_relu(x)))
        bins = self.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :bins])
        phase = torch.sin(x[:, bins:])
        wav = self._istft(magnitude, phase, lengths)
        return wav.clamp(-self.cfg.audio_limit, self.cfg.audio_limit)

    def _stft(self, signal: Tensor, lengths: _Lengths) -> Tensor:
        """Centred STFT (reflect-padded at each item's own ends) -> (B, 2 * bins, frames)."""
        batch, num_samples = signal.shape
        pad = self.n_fft // 2
        item_samples = lengths.device[:, None] * self.samples_per_frame
        # Index of every padded position into its item, reflecting at 0 and at the item's end.
        pos = torch.arange(-pad, num_samples + pad, device=signal.device).expand(batch, -1)
        pos = torch.where(pos < 0, -pos, pos)
        pos = torch.where(pos >= item_samples, 2 * (item_samples - 1) - pos, pos)
        padded = signal.gather(1, pos.clamp(0, num_samples - 1))
        spec = torch.stft(padded, self.n_fft, self.hop, self.n_fft,
                          window=stft_window(self.n_fft, signal.device), center=False,
                          return_complex=True)
        spec = torch.cat([spec.real, spec.imag], dim=1)
        frame_mask = lengths.mask(self.samples_per_frame // self.hop, 1, spec.shape[-1], spec.dtype)
        return _masked(spec, frame_mask)

    def _istft(self, magnitude: Tensor, phase: Tensor, lengths: _Lengths) -> Tensor:
        """Centred inverse STFT with each item's own window-square normalisation -> (B, N)."""
        magnitude = magnitude.float().clamp(max=1e2)
        phase = phase.float()
        frames = magnitude.shape[-1]
        frame_mask = lengths.mask(self.samples_per_frame // self.hop, 1, frames, magnitude.dtype)
        spec = torch.complex(_masked(magnitude * torch.cos(phase), frame_mask),
                             _masked(magnitude * torch.sin(phase), frame_mask))
        window = stft_window(self.n_fft, magnitude.device)
        segments = torch.fft.irfft(spec, n=self.n_fft, dim=1) * window[None, :, None]
        # Overlap-add of the windowed segments, and of the squared window over each item's frames.
        eye = torch.eye(self.n_fft, device=segments.device, dtype=segments.dtype)[:, None, :]
        summed = F.conv_transpose1d(segments, eye, stride=self.hop)[:, 0]
        if frame_mask is None:
            frame_mask = segments.new_ones(1, 1, frames)
        envelope = F.conv_transpose1d(frame_mask, window.pow(2)[None, None, :],
                                      stride=self.hop)[:, 0]
        pad = self.n_fft // 2
        summed = summed[:, pad:summed.shape[-1] - pad]
        envelope = envelope[:, pad:envelope.shape[-1] - pad]
        # Past an item's end the envelope is zero and the output is discarded anyway.
        return torch.where(envelope > 1e-11, summed / envelope.clamp(min=1e-11), 0.0)


def fold_weight_norm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace every (g, v) weight-norm pair (either key spelling) by weight = g * v / ||v||."""
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        for suffix, part in ((_PARAM_G, "g"), (_PARAM_V, "v"), (_LEGACY_G, "g"), (_LEGACY_V, "v")):
            if key.endswith(suffix):
                pairs.setdefault(key[:-len(suffix)], {})[part] = value
                break
        else:
            out[key] = value
    for name, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise ValueError(f"weight-norm pair of {name!r} is incomplete: only {sorted(pair)}")
        if f"{name}.weight" in out:
            raise ValueError(f"{name!r} has both a plain weight and a weight-norm pair")
        # The op the original's weight-norm parametrization runs: bit-identical weights.
        out[f"{name}.weight"] = torch._weight_norm(pair["v"].float(), pair["g"].float(), 0)
    return out
