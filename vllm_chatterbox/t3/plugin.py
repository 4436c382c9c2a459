"""vLLM plugin hook (entry point ``vllm.general_plugins``): registers the T3 architecture.

vLLM runs general plugins in every process it starts, so the spawned workers know the model.
"""

from vllm_chatterbox.t3.layout import ARCHITECTURE


def register() -> None:
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "vllm_chatterbox.t3.vllm_model:ChatterboxT3ForCausalLM")
