"""vllm-chatterbox: Chatterbox text-to-speech with T3 served exactly on vLLM and a batched S3Gen."""

from vllm_chatterbox.voice.voice import Voice

__all__ = ["ChatterboxTTS", "Voice"]


def __getattr__(name: str):
    # ChatterboxTTS pulls in vLLM; import it only when asked for.
    if name == "ChatterboxTTS":
        from vllm_chatterbox.tts import ChatterboxTTS

        return ChatterboxTTS
    raise AttributeError(name)
