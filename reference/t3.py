"""A plain-PyTorch T3 that follows the original inference loop step by step.

It shares nothing with the vLLM path: transformers' ``LlamaModel`` is the backbone (sdpa,
DynamicCache, implicit positions 0..), the conditioning and prompt are rebuilt here from the
checkpoint tensors, and each step runs the original's batch of two rows (cond, uncond):

    prefill   [cond(34) | text_emb + text_pos | BOS | BOS]   (uncond: text_emb zeroed)
    step k    speech_emb(g_k) + speech_pos[k + 1] fed to both rows, KV cache
    logits    CFG  ->  repetition penalty over {BOS} + generated  ->  temperature  ->  min_p  ->  top_p

The sampling order is that of the original's ``T3.inference`` loop (chatterbox-tts 0.1.7):
``cond + w * (cond - uncond)``, ``RepetitionPenaltyLogitsProcessor`` over the ids generated so
far (starting with BOS), ``logits / temperature`` (skipped at 1.0), ``MinPLogitsWarper``,
``TopPLogitsWarper``, then ``softmax`` and ``multinomial``. The warpers are re-written here from
transformers' definitions (5.2.0, the version chatterbox-tts pins; unchanged in 5.19).

``perturb`` switches on deliberate deviations used to show the equivalence tests can fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from transformers import DynamicCache, LlamaConfig, LlamaModel

from vllm_chatterbox.config import T3Config


SAMPLING_ORDER = ("repetition_penalty", "temperature", "min_p", "top_p")  # each after CFG


@dataclass(frozen=True)
class Perturbation:
    speech_position_offset: int = 0  # learned index k + 1 + offset for fed-back tokens
    single_bos: bool = False  # the community ports' single start-of-speech row
    uncond_keeps_text: bool = False  # uncond row without zeroed text embeddings
    sampling_order: tuple[str, ...] = SAMPLING_ORDER  # a permutation: steps applied in another order


@dataclass(frozen=True)
class SamplingParams:
    cfg_weight: float
    repetition_penalty: float
    temperature: float
    min_p: float
    top_p: float


def repetition_penalty(logits: torch.Tensor, penalised: set[int], penalty: float) -> torch.Tensor:
    """HF ``RepetitionPenaltyLogitsProcessor``: each id in the set once, whatever its count."""
    logits = logits.clone()
    if penalised:
        ids = torch.tensor(sorted(penalised))
        values = logits[ids]
        logits[ids] = torch.where(values < 0, values * penalty, values / penalty)
    return logits


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """HF ``MinPLogitsWarper``: drop ids whose probability is below min_p times the top one's
    (the top id always stays)."""
    probs = torch.softmax(logits, -1)
    drop = probs < min_p * probs.max()
    drop[probs.argmax()] = False
    return logits.masked_fill(drop, -math.inf)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """HF ``TopPLogitsWarper``: in ascending order, drop ids while the cumulative probability
    stays within 1 - top_p; the most likely id always stays."""
    ascending, order = torch.sort(logits)
    drop = torch.softmax(ascending, -1).cumsum(-1) <= 1 - top_p
    drop[-1] = False
    return logits.masked_fill(drop.scatter(0, order, drop), -math.inf)


class ReferenceT3:
    def __init__(self, t3_path, cfg: T3Config, perturb: Perturbation = Perturbation()):
        self.cfg = cfg
        self.perturb = perturb
        self.w = load_file(str(t3_path))
        llama_cfg = LlamaConfig(
            vocab_size=8, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
            max_position_embeddings=131072, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
            rope_parameters={"rope_type": "llama3", "rope_theta": cfg.rope_theta, "factor": cfg.rope_factor,
                             "low_freq_factor": cfg.rope_low_freq_factor,
                             "high_freq_factor": cfg.rope_high_freq_factor,
                             "original_max_position_embeddings": cfg.rope_original_max_position},
            attn_implementation="sdpa",
        )
        self.tfmr = LlamaModel(llama_cfg).eval()
        self.tfmr.load_state_dict({k[len("tfmr."):]: v for k, v in self.w.items() if k.startswith("tfmr.")})

    # --- conditioning and prompt ------------------------------------------------------------

    def _perceiver_block(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        p = "cond_enc.perceiver.attn."
        w = self.w
        ln = lambda x: torch.nn.functional.layer_norm(  # noqa: E731
            x, (x.shape[-1],), w[p + "norm.weight"], w[p + "norm.bias"], self.cfg.perceiver_norm_eps)
        lin = lambda x, n: x @ w[p + n + ".weight"].T + w[p + n + ".bias"]  # noqa: E731
        heads = self.cfg.perceiver_heads
        q, k, v = lin(ln(x1), "to_q"), lin(ln(x2), "to_k"), lin(ln(x2), "to_v")
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (q.shape[-1] // heads) ** 0.5, -1)
        out = (att @ split(v)).transpose(1, 2).reshape(x1.shape)
        return x1 + lin(out, "proj_out")

    def conditioning(self, speaker_emb: torch.Tensor, prompt_tokens: torch.Tensor, exaggeration: float) -> torch.Tensor:
        w = self.w
        speaker = speaker_emb.reshape(1, -1) @ w["cond_enc.spkr_enc.weight"].T + w["cond_enc.spkr_enc.bias"]
        tokens = prompt_tokens.reshape(-1).long()
        h = w["speech_emb.weight"][tokens] + w["speech_pos_emb.emb.weight"][: tokens.numel()]
        query = w["cond_enc.perceiver.pre_attention_query"]
        cross = self._perceiver_block(query, h[None])
        resampled = self._perceiver_block(cross, cross)[0]
        emotion = (w["cond_enc.emotion_adv_fc.weight"] * exaggeration).T
        return torch.cat([speaker, resampled, emotion], dim=0)

    def prefill_embeds(self, conditioning: torch.Tensor, text_ids: list[int]) -> torch.Tensor:
        """(2, L, D): row 0 conditional, row 1 unconditional."""
        w = self.w
        text = torch.tensor(text_ids)
        text_pos = w["text_pos_emb.emb.weight"][: text.numel()]
        bos = (w["speech_emb.weight"][self.cfg.start_speech_token] + w["speech_pos_emb.emb.weight"][0])[None]
        bos_rows = bos if self.perturb.single_bos else torch.cat([bos, bos])
        text_cond = w["text_emb.weight"][text] + text_pos
        text_uncond = text_cond if self.perturb.uncond_keeps_text else text_pos
        cond = torch.cat([conditioning, text_cond, bos_rows])
        uncond = torch.cat([conditioning, text_uncond, bos_rows])
        return torch.stack([cond, uncond])

    # --- the loop -----------------------------------------------------------------------------

    def _speech_input(self, token: int, k: int) -> torch.Tensor:
        w = self.w
        index = k + 1 + self.perturb.speech_position_offset
        emb = w["speech_emb.weight"][token] + w["speech_pos_emb.emb.weight"][index]
        return emb[None, None].expand(2, 1, -1)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden[:, -1] @ self.w["speech_head.weight"].T  # (2, V)

    @torch.inference_mode()
    def teacher_forced_logits(self, prefill: torch.Tensor, forced: list[int]) -> torch.Tensor:
        """Raw (cond, uncond) logits (steps, 2, V): step i after feeding BOS and forced[:i]."""
        cache = DynamicCache()
        out = self.tfmr(inputs_embeds=prefill, past_key_values=cache, use_cache=True)
        logits = [self._logits(out.last_hidden_state)]
        for k, token in enumerate(forced[:-1]):
            out = self.tfmr(inputs_embeds=self._speech_input(token, k), past_key_values=cache, use_cache=True)
            logits.append(self._logits(out.last_hidden_state))
        return torch.stack(logits)

    @staticmethod
    def guided(raw: torch.Tensor, cfg_weight: float, penalised: set[int], penalty: float) -> torch.Tensor:
        """CFG then the HF repetition penalty over the set ``penalised``."""
        cond, uncond = raw[0], raw[1]
        return repetition_penalty(cond + cfg_weight * (cond - uncond), penalised, penalty)

    def sampling_logits(self, raw: torch.Tensor, params: SamplingParams, penalised: set[int]) -> torch.Tensor:
        """(V,) logits the original draws from (softmax of them): -inf outside the kept ids."""
        cond, uncond = raw[0], raw[1]
        logits = cond + params.cfg_weight * (cond - uncond)
        for step in self.perturb.sampling_order:
            if step == "repetition_penalty":
                logits = repetition_penalty(logits, penalised, params.repetition_penalty)
            elif step == "temperature" and params.temperature != 1.0:
                logits = logits / params.temperature
            elif step == "min_p":
                logits = min_p_filter(logits, params.min_p)
            elif step == "top_p":
                logits = top_p_filter(logits, params.top_p)
        return logits

    @torch.inference_mode()
    def _decode(self, prefill: torch.Tensor, max_new_tokens: int, cfg_weight: float, penalty: float,
                pick: Callable[[torch.Tensor], int]) -> list[int]:
        """The original's loop: guided logits -> ``pick`` a token -> feed it back, until the stop token."""
        cache = DynamicCache()
        out = self.tfmr(inputs_embeds=prefill, past_key_values=cache, use_cache=True)
        generated: list[int] = []
        penalised = {self.cfg.start_speech_token}
        for k in range(max_new_tokens):
            token = pick(self.guided(self._logits(out.last_hidden_state), cfg_weight, penalised, penalty))
            generated.append(token)
            penalised.add(token)
            if token == self.cfg.stop_speech_token:
                break
            out = self.tfmr(inputs_embeds=self._speech_input(token, k), past_key_values=cache, use_cache=True)
        return generated

    def greedy(self, prefill: torch.Tensor, steps: int, cfg_weight: float, penalty: float) -> list[int]:
        return self._decode(prefill, steps, cfg_weight, penalty, lambda logits: int(logits.argmax()))

    def generate(self, prefill: torch.Tensor, max_new_tokens: int, *, cfg_weight: float, temperature: float,
                 min_p: float, top_p: float, repetition_penalty: float, generator: torch.Generator) -> list[int]:
        """The original's sampling loop (the benchmarks' baseline): CFG and repetition penalty,
        then temperature, min_p, top_p and one ``multinomial`` draw per step, batch of two rows,
        KV cache. Not modelled: the original also applies the speech head to every prompt row
        at prefill (about 2 % of the prefill's work) and draws a tqdm bar."""

        def sample(logits: torch.Tensor) -> int:
            if temperature != 1.0:
                logits = logits / temperature
            logits = top_p_filter(min_p_filter(logits, min_p), top_p)
            return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))

        return self._decode(prefill, max_new_tokens, cfg_weight, repetition_penalty, sample)
