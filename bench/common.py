"""What the benchmarks (and the tests that reuse them) share: the sampling settings both sides use,
the baseline's T3 call, and the switch between the lean and vLLM's forward inside an engine."""

from __future__ import annotations

import cloudpickle
import torch

WARMUP_TEXT = "Warm up."
WARMUP_TOKENS = 8
# The public defaults of ChatterboxTTS (the original's defaults).
SAMPLING = dict(cfg_weight=0.5, temperature=0.8, min_p=0.05, top_p=1.0, repetition_penalty=1.2)
EXAGGERATION = 0.5


def reference_speech_tokens(reference, voice, text_ids: list[int], max_new_tokens: int,
                            generator: torch.Generator) -> list[int]:
    """One text through ``reference.t3.ReferenceT3`` as the original runs it (batch of one)."""
    conditioning = reference.conditioning(voice.speaker_emb, voice.cond_prompt_speech_tokens, EXAGGERATION)
    prefill = reference.prefill_embeds(conditioning, text_ids)
    return reference.generate(prefill, max_new_tokens, generator=generator, **SAMPLING)


def set_lean_forward(engine, enabled: bool) -> bool:
    """Switch the T3 model's lean forward (either family) inside the engine process; the previous setting."""

    def switch(worker, enabled: bool) -> bool:  # runs in the engine process (pickled by value)
        model = getattr(worker, "worker", worker).model_runner.model
        previous, model.lean_forward = model.lean_forward, enabled
        return previous

    async def call():
        return await engine.engine.collective_rpc(cloudpickle.dumps(switch), args=(enabled,))

    return engine._run_in_loop(call())[0]
