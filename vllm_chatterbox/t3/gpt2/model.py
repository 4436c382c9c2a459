"""Turbo / Nano T3 (a GPT-2 backbone) as a vLLM model.

vLLM's own GPT-2 layers fit as they are: the original passes ``inputs_embeds`` and lets GPT-2
add its absolute ``wpe`` positions over the whole sequence, which is what vLLM's ``GPT2Model``
does with the positions it is given. Prompt rows arrive as precomputed embeddings
(``t3/gpt2/prefix.py``); a fed-back speech token is embedded with T3's ``speech_emb``, loaded
into GPT-2's token table (the original's own ``tfmr.wte`` is never used and is skipped).
Logits are ``speech_head`` (with bias) of the final LayerNorm output, plus one extra column, the
stop marker the sampler uses (``t3/gpt2/sampling.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models.gpt2 import GPT2Model
from vllm.sequence import IntermediateTensors

from vllm_chatterbox.config import TurboT3Config
from vllm_chatterbox.t3.cpu_turns import EngineTurn
from vllm_chatterbox.t3.gpt2.forward import gpt2_forward, lean_forward_supported
from vllm_chatterbox.t3.gpt2.linear import use_direct_onednn

# Tensors of t3_turbo_v1.safetensors the prompt builder uses in the client process.
_CLIENT_PREFIXES = ("text_emb.", "text_head.", "cond_enc.")


class ChatterboxT3TurboForCausalLM(nn.Module):
    """vLLM entry point (registered under ``engine_spec.ARCHITECTURE``). ``hf_config`` is a GPT-2
    config whose vocabulary is the speech vocabulary plus the stop marker; ``hf_config.t3_turbo``
    holds the :class:`TurboT3Config` fields."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        cfg = TurboT3Config(**vllm_config.model_config.hf_config.t3_turbo)
        self.cfg = cfg
        self.transformer = GPT2Model(vllm_config=vllm_config, prefix=f"{prefix}transformer")
        use_direct_onednn(self.transformer)
        # On a CPU: vLLM's GPT-2 forward, its kernels called without the Python layers around them.
        self.lean_forward = lean_forward_supported(self.transformer, vllm_config.model_config.dtype,
                                                   vllm_config.model_config.enforce_eager)
        self.speech_head = nn.Linear(cfg.hidden_size, cfg.speech_vocab_size, bias=True)
        # On a CPU with cpu_sharing="alternate": wait while S3Gen computes (t3/cpu_turns.py).
        self.cpu_turn = EngineTurn.from_environment()

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.transformer.embed_input_ids(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if self.cpu_turn is not None:
            self.cpu_turn.wait()
        if self.lean_forward:
            return gpt2_forward(self.transformer, input_ids, positions, inputs_embeds)
        return self.transformer(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.speech_head(hidden_states).float()
        return F.pad(logits, (0, 1), value=float("-inf"))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loaded: set[str] = set()

        def backbone():
            for name, tensor in weights:
                if name.startswith("tfmr."):
                    name = name[len("tfmr."):]
                    if name != "wte.weight":  # the original deletes it; speech_emb is the table
                        yield name, tensor
                elif name == "speech_emb.weight":
                    # Row V (the stop marker) is never fed back; it repeats the stop row.
                    yield "wte.weight", torch.cat([tensor, tensor[self.cfg.stop_speech_token:][:1]])
                elif name.startswith("speech_head."):
                    param = getattr(self.speech_head, name[len("speech_head."):])
                    if param.shape != tensor.shape:
                        raise ValueError(f"T3 weight {name!r}: checkpoint shape {tuple(tensor.shape)}, "
                                         f"model expects {tuple(param.shape)}")
                    with torch.no_grad():
                        param.copy_(tensor.to(param.dtype))
                    loaded.add(name)
                elif not name.startswith(_CLIENT_PREFIXES):
                    raise ValueError(f"unexpected Turbo T3 weight {name!r}")

        loaded.update(f"transformer.{name}" for name in self.transformer.load_weights(backbone()))
        return loaded
