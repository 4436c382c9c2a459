"""vLLM plugin hook (entry point ``vllm.general_plugins``): registers the T3 architectures.

vLLM runs general plugins in every process it starts, so the spawned workers know the models;
there it also fixes the engine's torch threads (``t3/threads.py``).
"""

from vllm_chatterbox.t3.layout import ARCHITECTURE
from vllm_chatterbox.t3.threads import enforce_engine_threads

TURBO_ARCHITECTURE = "ChatterboxT3TurboForCausalLM"


def register() -> None:
    from vllm import ModelRegistry

    enforce_engine_threads()
    supported = ModelRegistry.get_supported_archs()
    if ARCHITECTURE not in supported:
        ModelRegistry.register_model(ARCHITECTURE, "vllm_chatterbox.t3.vllm_model:ChatterboxT3ForCausalLM")
    if TURBO_ARCHITECTURE not in supported:
        ModelRegistry.register_model(TURBO_ARCHITECTURE, "vllm_chatterbox.t3.turbo_model:ChatterboxT3TurboForCausalLM")
