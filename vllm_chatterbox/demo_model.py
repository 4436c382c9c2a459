"""Random-weight Chatterbox models in the official file layout, for tests, benchmarks and demos.

``make_test_model(dir, size="tiny"|"full", seed)`` writes ``t3_cfg.safetensors``,
``s3gen.safetensors``, ``ve.safetensors``, ``tokenizer.json`` and ``conds.pt`` with the official
key names, plus ``chatterbox_config.json`` for the tiny size. With ``multilingual=True`` it
writes the multilingual layout instead: ``t3_mtl23ls_v2.safetensors`` (text vocabulary 2454),
``s3gen.pt`` and ``ve.pt`` (plain state dicts), ``grapheme_mtl_merged_expanded_v1.json`` and
``conds.pt``. ``variant="turbo"`` / ``"nano"`` writes the Turbo / Nano layout:
``t3_turbo_v1.safetensors`` / ``t3_nano_v1.safetensors`` (GPT-2 T3), ``s3gen_meanflow.safetensors``,
``ve.safetensors``, a small byte-level GPT-2 tokenizer with the paralinguistic tags, ``conds.pt``.
The files load through the same code path as the released weights. The output is noise, not
speech.

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

import json

from vllm_chatterbox.config import (SPEECH_VOCAB_SIZE, ChatterboxConfig, T3Config, TurboT3Config, tiny_config,
                                    tiny_turbo_config, turbo_config)
from vllm_chatterbox.model_files import (MULTILINGUAL_T3_FILES, MULTILINGUAL_TEXT_VOCAB_SIZE, MULTILINGUAL_TOKENIZER,
                                         TURBO_S3GEN, TURBO_T3_FILES, VARIANTS, ModelFiles)
from vllm_chatterbox.voice.voice import Voice

logger = logging.getLogger(__name__)

SIZES = ("tiny", "full")
PACKAGE_DATA = Path(__file__).resolve().parent / "data"


# Written beside every random-weight model's files.
RANDOM_WEIGHTS_MARKER = "random_weights.json"
# Turbo's paralinguistic tags (added tokens of its GPT-2 tokenizer).
TURBO_TAGS = ("[angry]", "[fear]", "[surprised]", "[whispering]", "[advertisement]", "[dramatic]", "[narration]",
              "[crying]", "[happy]", "[sarcastic]", "[clear throat]", "[sigh]", "[shush]", "[cough]", "[groan]",
              "[sniff]", "[gasp]", "[chuckle]", "[laugh]")


def config_for_size(size: str, variant: str = "original") -> ChatterboxConfig:
    if size not in SIZES:
        raise ValueError(f"unknown test-model size {size!r}; choose one of {SIZES}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "original":
        return tiny_config() if size == "tiny" else ChatterboxConfig()
    return tiny_turbo_config() if size == "tiny" else turbo_config(nano=variant == "nano")


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


def random_turbo_t3_state_dict(cfg: TurboT3Config, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """GPT-2 T3 weights under the official keys (Conv1D weights stored (in, out))."""
    d, inner = cfg.hidden_size, cfg.intermediate_size

    def normal(shape, std, mean=0.0):
        return torch.randn(*shape, generator=generator) * std + mean

    state = {"tfmr.wte.weight": normal((cfg.text_vocab_size, d), 0.02),
             "tfmr.wpe.weight": normal((cfg.max_positions, d), 0.5)}
    for i in range(cfg.num_layers):
        p = f"tfmr.h.{i}."
        qk = normal((d, 2 * d), 1.28 / math.sqrt(d))
        state[p + "attn.c_attn.weight"] = torch.cat([qk, normal((d, d), 0.8 / math.sqrt(d))], dim=1)
        state[p + "attn.c_attn.bias"] = normal((3 * d,), 0.05)
        state[p + "attn.c_proj.weight"] = normal((d, d), 0.8 / math.sqrt(d))
        state[p + "attn.c_proj.bias"] = normal((d,), 0.05)
        state[p + "mlp.c_fc.weight"] = normal((d, inner), 0.8 / math.sqrt(d))
        state[p + "mlp.c_fc.bias"] = normal((inner,), 0.05)
        state[p + "mlp.c_proj.weight"] = normal((inner, d), 0.96 / math.sqrt(inner))
        state[p + "mlp.c_proj.bias"] = normal((d,), 0.05)
        for norm in ("ln_1", "ln_2"):
            state[p + f"{norm}.weight"] = normal((d,), 0.1, 1.0)
            state[p + f"{norm}.bias"] = normal((d,), 0.05)
    state["tfmr.ln_f.weight"] = normal((d,), 0.1, 1.0)
    state["tfmr.ln_f.bias"] = normal((d,), 0.05)
    state["cond_enc.spkr_enc.weight"] = normal((d, cfg.speaker_embed_size), 1.0)
    state["cond_enc.spkr_enc.bias"] = normal((d,), 0.05)
    state["text_emb.weight"] = normal((cfg.text_vocab_size, d), 1.0)
    state["speech_emb.weight"] = normal((cfg.speech_vocab_size, d), 1.0)
    state["text_head.weight"] = normal((cfg.text_vocab_size, d), 0.02)
    row_scale = torch.exp(torch.randn(cfg.speech_vocab_size, 1, generator=generator) * 0.5)
    row_scale[cfg.start_speech_token:] *= 0.25
    state["speech_head.weight"] = normal((cfg.speech_vocab_size, d), 9.6 / math.sqrt(d)) * row_scale
    state["speech_head.bias"] = normal((cfg.speech_vocab_size,), 0.5)
    return {k: v.contiguous() for k, v in state.items()}


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in its id order (printable bytes first)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(extra))]


def write_turbo_tokenizer(directory: Path) -> None:
    """A byte-level GPT-2 tokenizer without merges (256 bytes + <|endoftext|>) plus Turbo's tags."""
    eot = "<|endoftext|>"
    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    vocab[eot] = len(vocab)
    tags = {tag: len(vocab) + i for i, tag in enumerate(TURBO_TAGS)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    (directory / "added_tokens.json").write_text(json.dumps(tags))
    (directory / "special_tokens_map.json").write_text(json.dumps({"bos_token": eot, "eos_token": eot, "unk_token": eot}))
    decoder = {str(vocab[eot]): {"content": eot, "lstrip": False, "normalized": False, "rstrip": False,
                                 "single_word": False, "special": True}}
    decoder.update({str(i): {"content": tag, "lstrip": False, "normalized": True, "rstrip": False,
                             "single_word": False, "special": False} for tag, i in tags.items()})
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": decoder, "bos_token": eot,
        "eos_token": eot, "unk_token": eot, "model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer",
    }, indent=1))


def random_voice(generator: torch.Generator, *, prompt_tokens: int = 150, ref_tokens: int = 100) -> Voice:
    """A builtin-like voice: random embeddings, prompt tokens and a plausible log-mel."""
    speaker = torch.randn(1, 256, generator=generator).abs()
    speaker = speaker / speaker.norm()
    return Voice(
        speaker_emb=speaker,
        cond_prompt_speech_tokens=torch.randint(0, SPEECH_VOCAB_SIZE, (1, prompt_tokens), generator=generator),
        exaggeration=0.5,
        prompt_token=torch.randint(0, SPEECH_VOCAB_SIZE, (1, ref_tokens), generator=generator),
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


def make_test_model(directory: str | Path, size: str = "tiny", seed: int = 0, multilingual: bool = False,
                    variant: str = "original") -> Path:
    config = config_for_size(size, variant)
    if variant != "original":
        if multilingual:
            raise ValueError(f"the {variant} model is English only")
        directory = _make_turbo_model(Path(directory), config, size, seed, variant)
        _write_marker(directory, size, seed, multilingual, variant)
        return directory
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
    _write_marker(directory, size, seed, multilingual, variant)
    return directory


def is_random_weight_model(directory: str | Path) -> bool:
    """Whether ``directory`` was written by :func:`make_test_model` (its speech is noise)."""
    return (Path(directory) / RANDOM_WEIGHTS_MARKER).is_file()


def _write_marker(directory: Path, size: str, seed: int, multilingual: bool, variant: str) -> None:
    # Tells servers and tools that this model's output is noise (the demo page says so).
    (directory / RANDOM_WEIGHTS_MARKER).write_text(json.dumps(
        {"random_weights": True, "size": size, "seed": seed, "multilingual": multilingual, "variant": variant}))


def _make_turbo_model(directory: Path, config: ChatterboxConfig, size: str, seed: int, variant: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    logger.info("writing a random-weight %s Chatterbox %s model to %s", size, variant, directory)
    save_file(random_turbo_t3_state_dict(config.turbo_t3, generator), str(directory / TURBO_T3_FILES[variant]))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        s3gen, voice_encoder = _s3gen_state_dict(config), _voice_encoder_state_dict(config)
    save_file(s3gen, str(directory / TURBO_S3GEN))
    save_file(voice_encoder, str(directory / "ve.safetensors"))
    random_voice(generator, prompt_tokens=config.turbo_t3.speech_cond_prompt_len).save(directory / "conds.pt")
    write_turbo_tokenizer(directory)
    if size != "full":
        config.save(directory)
    return directory


def cached_test_model(directory: str | Path, size: str = "tiny", seed: int = 0, multilingual: bool = False,
                      variant: str = "original") -> Path:
    """A random-weight model kept at ``directory`` (the CLI's demo model): checked on every use
    and rebuilt when missing or damaged. It is built in a temporary directory beside
    ``directory`` and renamed into place, so an interrupted build never leaves a partial model."""
    directory = Path(directory)
    if directory.exists():
        try:
            verify_model_dir(directory, multilingual, variant)
            return directory
        except ValueError as exc:
            logger.warning("the cached model %s is damaged (%s); rebuilding it", directory, exc)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.building-", dir=directory.parent))
    try:
        make_test_model(staging, size, seed, multilingual=multilingual, variant=variant)
        verify_model_dir(staging, multilingual, variant)
        if directory.exists():
            # Move the damaged copy aside first: a directory cannot be replaced in one rename.
            discarded = Path(tempfile.mkdtemp(prefix=f".{directory.name}.damaged-", dir=directory.parent))
            directory.rename(discarded / directory.name)
            shutil.rmtree(discarded, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError:
            # Another process finished first; use its copy if it is sound.
            verify_model_dir(directory, multilingual, variant)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def verify_model_dir(directory: Path, multilingual: bool = False, variant: str = "original") -> ModelFiles:
    """Every file of a model directory present and readable (cheap: headers, tokenizer, voice,
    configuration; not the tensor data). Raises ValueError naming the first problem."""
    from vllm_chatterbox.config import ChatterboxConfig
    from vllm_chatterbox.text import EnglishTokenizer, MultilingualTokenizer

    files = ModelFiles.from_dir(directory, multilingual=multilingual, variant=variant)
    files.check_readable()
    if not is_random_weight_model(directory):
        raise ValueError(f"{directory}: {RANDOM_WEIGHTS_MARKER} is missing")
    ChatterboxConfig.for_model_dir(directory)
    if not files.is_turbo:
        (MultilingualTokenizer if multilingual else EnglishTokenizer).from_file(files.tokenizer)
    Voice.load(files.conds)
    return files
