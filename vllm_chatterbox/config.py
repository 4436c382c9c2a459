"""Every dimension and constant of the Chatterbox models, in one typed place.

The defaults are the released English model's values. A model directory may carry
``chatterbox_config.json`` (nested like :class:`ChatterboxConfig`) that overrides any field;
the test models use it for their reduced sizes. Unknown keys are an error, so a typo in an
override file cannot silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE_NAME = "chatterbox_config.json"


def cache_root() -> Path:
    """Where demo models, vLLM model views and stored voices live ($VLLM_CHATTERBOX_CACHE)."""
    return Path(os.environ.get("VLLM_CHATTERBOX_CACHE", Path.home() / ".cache" / "vllm_chatterbox"))
# T3's compute dtypes: float32 is the released model's own arithmetic (the exact default);
# bfloat16 is the fast mode (weights, activations, KV cache; norm statistics, RoPE and logits in fp32).
T3_DTYPES = ("float32", "bfloat16")


def check_t3_dtype(dtype) -> str:
    """The name of a T3 compute dtype (a name of :data:`T3_DTYPES` or that torch dtype); else a ValueError."""
    name = str(dtype).removeprefix("torch.")
    if name not in T3_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, T3_DTYPES))}, got {dtype!r}")
    return name


# How T3's engine and S3Gen share a CPU (t3/cpu_turns.py): take turns, or compute at once.
CPU_SHARING_MODES = ("alternate", "overlap")


def check_cpu_sharing(mode) -> str | None:
    """``mode`` if it is None or one of :data:`CPU_SHARING_MODES`; else a ValueError."""
    if mode is not None and mode not in CPU_SHARING_MODES:
        raise ValueError(f"cpu_sharing must be one of {', '.join(map(repr, CPU_SHARING_MODES))} (or None: "
                         f"alternate when T3's and S3Gen's threads exceed the cores), got {mode!r}")
    return mode


@dataclass(frozen=True)
class CpuThreads:
    """How T3's engine process and this process share a CPU machine's cores.

    ``t3``: compute threads of the T3 engine (vLLM's engine-core process, where the model runs on
    a CPU); None: ``OMP_NUM_THREADS`` if set, else every core this process may use.
    ``s3gen``: torch threads of this process, where S3Gen and the voice networks run; None leaves
    torch's own setting (every core) alone. For one request at a time the two never compute at
    once, so both default to every core; where T3 keeps decoding while S3Gen vocodes (many texts,
    streams, a busy server), giving them disjoint shares (e.g. 1 + 1 on 2 cores) keeps two
    OpenMP teams from competing for the same cores.
    ``sharing``: "alternate" (T3's engine holds its steps while S3Gen computes: time-sharing),
    "overlap" (both compute at once), or None: alternate when ``t3`` + ``s3gen`` threads exceed
    the cores (the default, every core each), overlap when they split them. Only on a CPU.
    """

    t3: int | None = None
    s3gen: int | None = None
    sharing: str | None = None

    def __post_init__(self) -> None:
        check_cpu_sharing(self.sharing)
        cores = len(os.sched_getaffinity(0))
        for name, value in (("t3_threads", self.t3), ("s3gen_threads", self.s3gen)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cores):
                raise ValueError(f"{name} must be an integer in [1, {cores}] (the cores this process may use), "
                                 f"got {value!r}")


# S3Gen's audio rate, Hz: HiFT writes it, and the voice's prompt mel is computed at it.
S3GEN_SAMPLE_RATE = 24000
# The S3 speech tokens (3^8 FSQ codes): the S3 tokenizer's codebook and S3Gen's token vocabulary.
# T3's speech vocabulary is larger; its ids from here on are control tokens S3Gen never sees.
SPEECH_VOCAB_SIZE = 6561


@dataclass(frozen=True)
class T3Config:
    # Token ids and vocabularies (English; multilingual differs in text_vocab_size).
    start_text_token: int = 255
    stop_text_token: int = 0
    text_vocab_size: int = 704
    max_text_tokens: int = 2048
    start_speech_token: int = 6561
    stop_speech_token: int = 6562
    speech_vocab_size: int = 8194
    max_speech_tokens: int = 4096
    speech_cond_prompt_len: int = 150
    speaker_embed_size: int = 256
    # Llama_520M backbone.
    hidden_size: int = 1024
    num_layers: int = 30
    num_heads: int = 16
    num_kv_heads: int = 16
    head_dim: int = 64
    intermediate_size: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    # Conditioning encoder: perceiver resampler.
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    perceiver_norm_eps: float = 1e-5
    # The prefix is speaker (1) + perceiver (perceiver_queries) + emotion (1) rows.

    @property
    def cond_len(self) -> int:
        return 1 + self.perceiver_queries + 1

    @property
    def text_pos_table_size(self) -> int:
        return self.max_text_tokens + 2

    @property
    def speech_pos_table_size(self) -> int:
        return self.max_speech_tokens + 4

    @property
    def max_text_len(self) -> int:
        """Largest text length in tokens (without start/stop) the position table allows."""
        return self.text_pos_table_size - 2


@dataclass(frozen=True)
class TurboT3Config:
    """T3 of Chatterbox Turbo (GPT-2 medium; Nano: GPT-2 small, see :func:`nano_t3_config`).

    The prompt is speaker row | reference speech tokens | text ids | start token, with GPT-2's
    own absolute positions; no CFG, no perceiver, no emotion row."""

    text_vocab_size: int = 50276
    start_speech_token: int = 6561
    stop_speech_token: int = 6562
    speech_vocab_size: int = 6563
    speech_cond_prompt_len: int = 375
    speaker_embed_size: int = 256
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    max_positions: int = 8196
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_new"
    # The original samples one token from the prefill, then at most max_gen_len = 1000 more.
    max_new_tokens: int = 1001
    # Longest text in ids: the GPT-2 tokenizer's model_max_length (the original truncates there).
    max_text_tokens: int = 1024


def nano_t3_config() -> TurboT3Config:
    return TurboT3Config(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)


@dataclass(frozen=True)
class VoiceEncoderConfig:
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    win_length: int = 400
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float = 8000.0
    hidden_size: int = 256
    num_layers: int = 3
    embed_size: int = 256
    partial_frames: int = 160
    partial_rate: float = 1.3
    min_coverage: float = 0.8
    trim_top_db: float = 20.0


@dataclass(frozen=True)
class S3TokenizerConfig:
    sample_rate: int = 16000
    n_mels: int = 128
    n_fft: int = 400
    hop_length: int = 160
    n_state: int = 1280
    n_head: int = 20
    n_layer: int = 6
    fsmn_kernel_size: int = 31
    codebook_size: int = SPEECH_VOCAB_SIZE
    token_rate: int = 25
    # LayerNorm before each block's attention; s3tokenizer <= 0.2.0 used 1e-6, 0.3.0 (what
    # chatterbox-tts installs today) uses 1e-5. The MLP LayerNorm is 1e-5 in both.
    attention_norm_eps: float = 1e-5


@dataclass(frozen=True)
class CAMPPlusConfig:
    feat_dim: int = 80
    embedding_size: int = 192
    growth_rate: int = 32
    bn_size: int = 4
    init_channels: int = 128


@dataclass(frozen=True)
class FlowConfig:
    """Token embedding + upsampling conformer encoder of S3Gen."""

    vocab_size: int = SPEECH_VOCAB_SIZE
    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    encoder_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    num_up_blocks: int = 4
    pre_lookahead_len: int = 3
    token_mel_ratio: int = 2


@dataclass(frozen=True)
class EstimatorConfig:
    """The conditional flow-matching decoder (a 1-D U-Net with transformer blocks)."""

    in_channels: int = 320
    out_channels: int = 80
    channels: int = 256
    attention_head_dim: int = 64
    num_heads: int = 8
    n_blocks: int = 4
    num_mid_blocks: int = 12
    inference_cfg_rate: float = 0.7
    default_n_timesteps: int = 10
    # Turbo/Nano's distilled "meanflow" decoder: linear time grid, no CFG, time embedding of
    # (t, r) through time_embed_mixer; 2 steps by default.
    meanflow: bool = False


@dataclass(frozen=True)
class HiFTConfig:
    in_channels: int = 80
    base_channels: int = 512
    f0_cond_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = S3GEN_SAMPLE_RATE
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    istft_n_fft: int = 16
    istft_hop_length: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99


@dataclass(frozen=True)
class PerthConfig:
    """Resemble AI's Perth implicit watermark as published (``resemble-perth`` 1.0.1, its
    ``pretrained/implicit/hparams.yaml``): the same for every Chatterbox model, so it is not part
    of :class:`ChatterboxConfig` and no model directory can override it."""

    sample_rate: int = 32000  # the network's rate: audio is resampled to it and back
    n_fft: int = 2048
    hop_size: int = 320
    window_size: int = 2048  # a periodic Hann window
    window_fn: str = "hann"
    stft_magnitude_min: float = 1e-9  # magnitudes are floored here before taking dB
    headroom_db: float = 15.0  # dB above 0 dBFS that the normalised magnitude still spans
    max_wmark_freq: float = 2000.0  # Hz: the mark lives in the STFT bins below this
    hidden_size: int = 256
    loud_frame_fraction: float = 0.05  # frames below this fraction of the loudest are left unmarked

    @property
    def freq_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def marked_bins(self) -> int:
        """STFT bins (from 0 Hz) that carry the mark: 128 of 1025."""
        return int(round(self.freq_bins * self.max_wmark_freq / (self.sample_rate / 2)))


@dataclass(frozen=True)
class ChatterboxConfig:
    t3: T3Config = field(default_factory=T3Config)
    voice_encoder: VoiceEncoderConfig = field(default_factory=VoiceEncoderConfig)
    s3_tokenizer: S3TokenizerConfig = field(default_factory=S3TokenizerConfig)
    campplus: CAMPPlusConfig = field(default_factory=CAMPPlusConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    hift: HiFTConfig = field(default_factory=HiFTConfig)
    # Used only by the Turbo / Nano layouts (which use ``estimator.meanflow``).
    turbo_t3: TurboT3Config = field(default_factory=TurboT3Config)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChatterboxConfig":
        return _build(cls, data, "config")

    @classmethod
    def for_model_dir(cls, model_dir: str | Path) -> "ChatterboxConfig":
        """Released values, overridden by ``chatterbox_config.json`` when the directory has one."""
        path = Path(model_dir) / CONFIG_FILE_NAME
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    def save(self, model_dir: str | Path) -> None:
        (Path(model_dir) / CONFIG_FILE_NAME).write_text(json.dumps(self.to_dict(), indent=1))


def _build(cls: type, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            kwargs[name] = _to_tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _to_tuple(value):
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuple(v) for v in value)
    return value


def tiny_config() -> ChatterboxConfig:
    """The reduced sizes of the tiny test model (equal to ``shared/fixtures/tiny``)."""
    return ChatterboxConfig(
        t3=T3Config(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                    intermediate_size=128),
        s3_tokenizer=S3TokenizerConfig(n_state=64, n_head=1, n_layer=2),
        campplus=CAMPPlusConfig(growth_rate=4, bn_size=2, init_channels=16),
        flow=FlowConfig(input_size=32, encoder_size=32, attention_heads=2, linear_units=64,
                        num_blocks=2),
        estimator=EstimatorConfig(channels=32, attention_head_dim=16, num_heads=2, n_blocks=1,
                                  num_mid_blocks=1),
        hift=HiFTConfig(base_channels=32, f0_cond_channels=16),
    )


def turbo_config(*, nano: bool = False) -> ChatterboxConfig:
    """Released Chatterbox Turbo (or Nano) values: GPT-2 T3 and the 2-step meanflow S3Gen."""
    return ChatterboxConfig(
        estimator=EstimatorConfig(meanflow=True, default_n_timesteps=2),
        turbo_t3=nano_t3_config() if nano else TurboT3Config(),
    )


def tiny_turbo_config() -> ChatterboxConfig:
    """The reduced sizes of the tiny Turbo test model (equal to ``shared/fixtures/tiny-turbo``)."""
    tiny = tiny_config()
    return dataclasses.replace(
        tiny,
        estimator=dataclasses.replace(tiny.estimator, meanflow=True, default_n_timesteps=2),
        turbo_t3=TurboT3Config(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256),
    )
