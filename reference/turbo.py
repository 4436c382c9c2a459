"""A plain-PyTorch Turbo / Nano T3 that follows the original ``T3.inference_turbo`` loop step by step.

It shares nothing with the vLLM path: transformers' ``GPT2Model`` is the backbone (its default
attention, its own ``DynamicCache``, GPT-2's absolute positions 0..), the prompt is rebuilt here
from the checkpoint tensors, and the sampler is transformers' own processor classes, in the
original's order (chatterbox-tts 0.1.7):

    prefill   [spkr_enc(speaker_emb) | speech_emb(prompt tokens) | text_emb(text ids) | speech_emb(start)]
    step k    speech_emb(token) alone, KV cache
    logits    speech_head (with bias)
    sampling  TemperatureLogitsWarper (T > 0, T != 1) -> TopKLogitsWarper (k > 0) -> TopPLogitsWarper
              (p < 1) -> RepetitionPenaltyLogitsProcessor (!= 1; history [start] at the first step,
              then the generated ids) -> softmax -> torch.multinomial

The first token is drawn from the prefill's logits and never checked for the stop id; then up to
``max_gen_len`` steps, each stopping when every processed logit is -inf or the stop id is drawn;
a trailing stop id is dropped. ``penalty_first=True`` moves the repetition penalty to the front
(vLLM's stock order), the deviation the tests use to show the comparison can fail.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import DynamicCache, GPT2Config, GPT2Model
from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from vllm_chatterbox.config import TurboT3Config


def processors(temperature: float, top_k: int, top_p: float, repetition_penalty: float,
               penalty_first: bool = False) -> LogitsProcessorList:
    """The original's processor list for these settings (each only when it changes anything)."""
    steps = LogitsProcessorList()
    penalty = [RepetitionPenaltyLogitsProcessor(repetition_penalty)] if repetition_penalty != 1.0 else []
    if penalty_first:
        steps.extend(penalty)
    if temperature > 0 and temperature != 1.0:
        steps.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        steps.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        steps.append(TopPLogitsWarper(top_p))
    if not penalty_first:
        steps.extend(penalty)
    return steps


class ReferenceTurboT3:
    def __init__(self, t3_path, cfg: TurboT3Config):
        self.cfg = cfg
        self.w = load_file(str(t3_path))
        gpt2 = GPT2Config(
            n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.intermediate_size,
            n_positions=cfg.max_positions, n_ctx=cfg.max_positions, activation_function=cfg.activation,
            layer_norm_epsilon=cfg.layer_norm_eps, vocab_size=self.w["tfmr.wte.weight"].shape[0],
        )
        self.tfmr = GPT2Model(gpt2).eval()
        self.tfmr.load_state_dict({k[len("tfmr."):]: v for k, v in self.w.items() if k.startswith("tfmr.")})
        # The original deletes GPT-2's own token table after loading; T3 always passes embeddings.
        del self.tfmr.wte
        self.w = {k: v for k, v in self.w.items() if not k.startswith("tfmr.")}  # the module holds them now

    def prefill_embeds(self, speaker_emb: torch.Tensor, prompt_tokens: torch.Tensor, text_ids: list[int]) -> torch.Tensor:
        """(1, 1 + P + T + 1, D) ``inputs_embeds`` of the first backbone call."""
        w = self.w
        speaker = F.linear(speaker_emb.reshape(1, -1).to(self.device), w["cond_enc.spkr_enc.weight"],
                           w["cond_enc.spkr_enc.bias"])
        prompt = w["speech_emb.weight"][prompt_tokens.reshape(-1).long().to(self.device)]
        text = w["text_emb.weight"][torch.tensor(text_ids, dtype=torch.long, device=self.device)]
        start = w["speech_emb.weight"][self.cfg.start_speech_token][None]
        return torch.cat([speaker, prompt, text, start])[None]

    @property
    def device(self) -> torch.device:
        return self.w["speech_head.weight"].device

    def to(self, device) -> "ReferenceTurboT3":
        """The model on ``device`` (the original runs on CUDA where there is one)."""
        self.tfmr.to(device)
        self.w = {k: v.to(device) for k, v in self.w.items()}
        return self

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden[:, -1], self.w["speech_head.weight"], self.w["speech_head.bias"])  # (1, V)

    def _speech_input(self, token: torch.Tensor) -> torch.Tensor:
        return self.w["speech_emb.weight"][token]  # (1, 1, D)

    @torch.inference_mode()
    def teacher_forced_logits(self, prefill: torch.Tensor, forced: list[int]) -> torch.Tensor:
        """Raw logits (steps, V): step i after the prefill and forced[:i]."""
        cache = DynamicCache()
        out = self.tfmr(inputs_embeds=prefill, past_key_values=cache, use_cache=True)
        logits = [self._logits(out.last_hidden_state)[0]]
        for token in forced[:-1]:
            embeds = self._speech_input(torch.tensor([[token]], device=self.device))
            out = self.tfmr(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
            logits.append(self._logits(out.last_hidden_state)[0])
        return torch.stack(logits)

    def processed_logits(self, raw: torch.Tensor, history: list[int], temperature: float, top_k: int, top_p: float,
                         repetition_penalty: float, penalty_first: bool = False) -> torch.Tensor:
        """(V,) what the original's processor list returns for raw (V,) logits and a history."""
        steps = processors(temperature, top_k, top_p, repetition_penalty, penalty_first)
        return steps(torch.tensor([history], device=raw.device), raw[None].clone())[0]

    @torch.inference_mode()
    def generate(self, prefill: torch.Tensor, max_gen_len: int = 1000, *, temperature: float = 0.8, top_k: int = 1000,
                 top_p: float = 0.95, repetition_penalty: float = 1.2,
                 generator: torch.Generator | None = None) -> list[int]:
        """The original's loop (the benchmarks' baseline): what ``inference_turbo`` returns.
        ``generator=None`` draws from torch's global RNG, as the original does."""
        steps = processors(temperature, top_k, top_p, repetition_penalty)
        start = torch.tensor([[self.cfg.start_speech_token]], device=self.device)
        cache = DynamicCache()
        out = self.tfmr(inputs_embeds=prefill, past_key_values=cache, use_cache=True)
        scores = steps(start, self._logits(out.last_hidden_state))
        token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1, generator=generator)
        generated = [token]
        for _ in range(max_gen_len):
            out = self.tfmr(inputs_embeds=self._speech_input(token), past_key_values=cache, use_cache=True)
            scores = steps(torch.cat(generated, dim=1), self._logits(out.last_hidden_state))
            if torch.all(scores == -float("inf")):
                break
            token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1, generator=generator)
            generated.append(token)
            if int(token) == self.cfg.stop_speech_token:
                break
        tokens = [int(t) for t in torch.cat(generated, dim=1)[0]]
        if tokens and tokens[-1] == self.cfg.stop_speech_token:
            tokens = tokens[:-1]
        return tokens
