"""vllm-chatterbox: Chatterbox text-to-speech with T3 served exactly on vLLM and a batched S3Gen."""

from vllm_chatterbox.t3.quiet import quiet_engine_process_imports

__all__ = ["ChatterboxTTS", "Voice"]

# In a T3 engine process (it re-imports the main script, and so this package, first): vLLM's
# import-time lines stay quiet. A no-op elsewhere.
quiet_engine_process_imports()


def __getattr__(name: str):
    # Imported only when asked for: ChatterboxTTS pulls in vLLM and Voice pulls in torch, and the
    # command line checks its arguments before paying for either.
    if name == "ChatterboxTTS":
        from vllm_chatterbox.tts import ChatterboxTTS

        return ChatterboxTTS
    if name == "Voice":
        from vllm_chatterbox.voice.voice import Voice

        return Voice
    raise AttributeError(name)
