"""vLLM plugin hook (entry point ``vllm.general_plugins``): registers both T3 architectures.

vLLM runs general plugins in every process it starts, so the spawned workers know the models.
Models are registered by name and imported by vLLM only when used.
"""

from vllm_chatterbox.t3.gpt2.engine_spec import ARCHITECTURE as GPT2_ARCHITECTURE
from vllm_chatterbox.t3.llama.layout import ARCHITECTURE as LLAMA_ARCHITECTURE

MODELS = {
    LLAMA_ARCHITECTURE: "vllm_chatterbox.t3.llama.model:ChatterboxT3ForCausalLM",
    GPT2_ARCHITECTURE: "vllm_chatterbox.t3.gpt2.model:ChatterboxT3TurboForCausalLM",
}


def register() -> None:
    from vllm import ModelRegistry

    supported = ModelRegistry.get_supported_archs()
    for architecture, model in MODELS.items():
        if architecture not in supported:
            ModelRegistry.register_model(architecture, model)
