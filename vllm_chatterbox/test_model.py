"""Random-weight Chatterbox models in the official file layout, for tests, benchmarks and demos.

``make_test_model(dir, size="tiny"|"full", seed)`` writes ``t3_cfg.safetensors``,
``s3gen.safetensors``, ``ve.safetensors``, ``tokenizer.json`` and ``conds.pt`` with the official
key names, plus ``chatterbox_config.json`` for the tiny size. With ``multilingual=True`` it
writes the multilingual layout instead: ``t3_mtl23ls_v2.safetensors`` (text vocabulary 2454),
``s3gen.pt`` and ``ve.pt`` (plain state dicts), ``grapheme_mtl_merged_expanded_v1.json`` and
``conds.pt``. The files load through the same code path as the released weights. The output
is noise, not speech.

T3 weights are scaled with the model width so that raw logits have a standard deviation near
10 at any size: greedy decoding is then decided by the weights, not by float rounding.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from vllm_chatterbox.config import ChatterboxConfig, T3Config, tiny_config
from vllm_chatterbox.model_files import (MULTILINGUAL_T3_FILES, MULTILINGUAL_TEXT_VOCAB_SIZE, MULTILINGUAL_TOKENIZER,
                                         ModelFiles)
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

SIZES = ("tiny", "full")
PACKAGE_DATA = Path(__file__).resolve().parent / "data"


def config_for_size(size: str) -> ChatterboxConfig:
    if size == "tiny":
        return tiny_config()
    if size == "full":
        return ChatterboxConfig()
    raise ValueError(f"unknown test-model size {size!r}; choose one of {SIZES}")


def random_t3_state_dict(cfg: T3Config, generator: torch.Generator) -> dict[str, torch.Tensor]:
    d, inner, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim

    def normal(shape, std, mean=0.0):
        return torch.randn(*shape, generator=generator) * std + mean

    state = {"tfmr.embed_tokens.weight": normal((8, d), 0.02)}
    for i in range(cfg.num_layers):
        p = f"tfmr.layers.{i}."
        state[p + "self_attn.q_proj.weight"] = normal((cfg.num_heads * hd, d), 1.28 / math.sqrt(d))
        state[p + "self_attn.k_proj.weight"] = normal((cfg.num_kv_heads * hd, d), 1.28 / math.sqrt(d))
        state[p + "self_attn.v_proj.weight"] = normal((cfg.num_kv_heads * hd, d), 0.8 / math.sqrt(d))
        state[p + "self_attn.o_proj.weight"] = normal((d, cfg.num_heads * hd), 0.8 / math.sqrt(d))
        state[p + "mlp.gate_proj.weight"] = normal((inner, d), 0.8 / math.sqrt(d))
        state[p + "mlp.up_proj.weight"] = normal((inner, d), 0.8 / math.sqrt(d))
        state[p + "mlp.down_proj.weight"] = normal((d, inner), 0.96 / math.sqrt(inner))
        state[p + "input_layernorm.weight"] = normal((d,), 0.1, 1.0)
        state[p + "post_attention_layernorm.weight"] = normal((d,), 0.1, 1.0)
    state["tfmr.norm.weight"] = normal((d,), 0.1, 1.0)

    state["cond_enc.spkr_enc.weight"] = normal((d, cfg.speaker_embed_size), 1.0)
    state["cond_enc.spkr_enc.bias"] = normal((d,), 0.05)
    state["cond_enc.emotion_adv_fc.weight"] = normal((d, 1), 2.0)
    state["cond_enc.perceiver.pre_attention_query"] = normal((1, cfg.perceiver_queries, d), 0.5)
    state["cond_enc.perceiver.attn.norm.weight"] = normal((d,), 0.1, 1.0)
    state["cond_enc.perceiver.attn.norm.bias"] = normal((d,), 0.05)
    for name, std in (("to_q", 1.92), ("to_k", 1.92), ("to_v", 0.96), ("proj_out", 0.96)):
        state[f"cond_enc.perceiver.attn.{name}.weight"] = normal((d, d), std / math.sqrt(d))
        state[f"cond_enc.perceiver.attn.{name}.bias"] = normal((d,), 0.05)

    state["text_emb.weight"] = normal((cfg.text_vocab_size, d), 1.0)
    state["speech_emb.weight"] = normal((cfg.speech_vocab_size, d), 1.0)
    state["text_pos_emb.emb.weight"] = normal((cfg.text_pos_table_size, d), 0.5)
    state["speech_pos_emb.emb.weight"] = normal((cfg.speech_pos_table_size, d), 0.5)
    state["text_head.weight"] = normal((cfg.text_vocab_size, d), 0.02)
    # Row scales vary so some tokens are systematically likelier; control rows are damped so
    # random weights rarely stop or emit start-of-speech.
    row_scale = torch.exp(torch.randn(cfg.speech_vocab_size, 1, generator=generator) * 0.5)
    row_scale[cfg.start_speech_token:] *= 0.25
    state["speech_head.weight"] = normal((cfg.speech_vocab_size, d), 9.6 / math.sqrt(d)) * row_scale
    return {k: v.contiguous() for k, v in state.items()}


def random_voice(generator: torch.Generator, *, prompt_tokens: int = 150, ref_tokens: int = 100) -> Voice:
    """A builtin-like voice: random embeddings, prompt tokens and a plausible log-mel."""
    speaker = torch.randn(1, 256, generator=generator).abs()
    speaker = speaker / speaker.norm()
    return Voice(
        speaker_emb=speaker,
        cond_prompt_speech_tokens=torch.randint(0, 6561, (1, prompt_tokens), generator=generator),
        exaggeration=0.5,
        prompt_token=torch.randint(0, 6561, (1, ref_tokens), generator=generator),
        prompt_feat=torch.randn(1, 2 * ref_tokens, 80, generator=generator) * 1.5 - 5.0,
        embedding=torch.randn(1, 192, generator=generator) * 0.1,
    )


def _s3gen_state_dict(config: ChatterboxConfig) -> dict[str, torch.Tensor]:
    from vllm_chatterbox.s3gen.model import S3Gen
    from vllm_chatterbox.voice.campplus import CAMPPlus
    from vllm_chatterbox.voice.s3_tokenizer import S3Tokenizer

    state = dict(S3Gen(config).official_state_dict())
    state.update({f"tokenizer.{k}": v for k, v in S3Tokenizer(config.s3_tokenizer).state_dict().items()})
    state.update({f"speaker_encoder.{k}": v for k, v in CAMPPlus(config.campplus).state_dict().items()})
    return {k: v.detach().contiguous() for k, v in state.items()}


def _voice_encoder_state_dict(config: ChatterboxConfig) -> dict[str, torch.Tensor]:
    from vllm_chatterbox.voice.voice_encoder import VoiceEncoder

    return {k: v.detach().contiguous() for k, v in VoiceEncoder(config.voice_encoder).state_dict().items()}


def make_test_model(directory: str | Path, size: str = "tiny", seed: int = 0, multilingual: bool = False) -> Path:
    config = config_for_size(size)
    if multilingual:
        config = dataclasses.replace(
            config, t3=dataclasses.replace(config.t3, text_vocab_size=MULTILINGUAL_TEXT_VOCAB_SIZE))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    logger.info("writing a random-weight %s %s Chatterbox model to %s", size,
                "multilingual" if multilingual else "English", directory)

    t3_name = MULTILINGUAL_T3_FILES["v2"] if multilingual else "t3_cfg.safetensors"
    save_file(random_t3_state_dict(config.t3, generator), str(directory / t3_name))
    # Module initialisation draws from the global RNG; seed it for reproducible files.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        s3gen, voice_encoder = _s3gen_state_dict(config), _voice_encoder_state_dict(config)
    if multilingual:  # the multilingual release ships these two as torch.save'd state dicts
        torch.save(s3gen, directory / "s3gen.pt")
        torch.save(voice_encoder, directory / "ve.pt")
    else:
        save_file(s3gen, str(directory / "s3gen.safetensors"))
        save_file(voice_encoder, str(directory / "ve.safetensors"))
    random_voice(generator).save(directory / "conds.pt")
    if multilingual:
        shutil.copyfile(PACKAGE_DATA / MULTILINGUAL_TOKENIZER, directory / MULTILINGUAL_TOKENIZER)
    else:
        shutil.copyfile(PACKAGE_DATA / "en_tokenizer.json", directory / "tokenizer.json")
    if size != "full":
        config.save(directory)
    return directory


def cached_test_model(directory: str | Path, size: str = "tiny", seed: int = 0, multilingual: bool = False) -> Path:
    """A random-weight model kept at ``directory`` (the CLI's demo model): checked on every use
    and rebuilt when missing or damaged. It is built in a temporary directory beside
    ``directory`` and renamed into place, so an interrupted build never leaves a partial model."""
    directory = Path(directory)
    if directory.exists():
        try:
            verify_model_dir(directory, multilingual)
            return directory
        except ValueError as exc:
            logger.warning("the cached model %s is damaged (%s); rebuilding it", directory, exc)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.building-", dir=directory.parent))
    try:
        make_test_model(staging, size, seed, multilingual=multilingual)
        verify_model_dir(staging, multilingual)
        if directory.exists():
            # Move the damaged copy aside first: a directory cannot be replaced in one rename.
            discarded = Path(tempfile.mkdtemp(prefix=f".{directory.name}.damaged-", dir=directory.parent))
            directory.rename(discarded / directory.name)
            shutil.rmtree(discarded, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError:
            # Another process finished first; use its copy if it is sound.
            verify_model_dir(directory, multilingual)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def verify_model_dir(directory: Path, multilingual: bool = False) -> ModelFiles:
    """Every file of a model directory present and readable (cheap: headers, tokenizer, voice,
    configuration; not the tensor data). Raises ValueError naming the first problem."""
    from vllm_chatterbox.config import ChatterboxConfig
    from vllm_chatterbox.text import EnglishTokenizer, MultilingualTokenizer

    files = ModelFiles.from_dir(directory, multilingual=multilingual)
    files.check_readable()
    ChatterboxConfig.for_model_dir(directory)
    (MultilingualTokenizer if multilingual else EnglishTokenizer).from_file(files.tokenizer)
    Voice.load(files.conds)
    return files
