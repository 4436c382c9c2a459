"""``ChatterboxTurboTTS``: the name earlier releases gave Chatterbox Turbo / Nano.

It is :class:`~vllm_chatterbox.tts.ChatterboxTTS` itself: ``ChatterboxTTS.from_dir`` /
``from_pretrained(variant="turbo"|"nano")`` load Turbo and Nano, and everything they do
differently is their row of ``vllm_chatterbox/variants.py`` (tokenizer, GPT-2 T3 client and
engine, ``n_timesteps`` 2, voice options, speech-token clean-up).
"""

from vllm_chatterbox.tts import ChatterboxTTS as ChatterboxTurboTTS

__all__ = ["ChatterboxTurboTTS"]
