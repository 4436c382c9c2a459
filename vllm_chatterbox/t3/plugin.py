"""vLLM plugin hook (entry point ``vllm.general_plugins``): registers both T3 architectures.

vLLM runs general plugins in every process it starts, so the spawned workers know the models;
there it also fixes the engine's torch threads (``t3/threads.py``) and ties each such process's
life to its parent's (``t3/lifetime.py``).
Models are registered by name and imported by vLLM only when used.
"""

from vllm_chatterbox.t3.gpt2.engine_spec import ARCHITECTURE as GPT2_ARCHITECTURE
from vllm_chatterbox.t3.lifetime import die_with_parent
from vllm_chatterbox.t3.llama.layout import ARCHITECTURE as LLAMA_ARCHITECTURE
from vllm_chatterbox.t3.threads import enforce_engine_threads

MODELS = {
    LLAMA_ARCHITECTURE: "vllm_chatterbox.t3.llama.model:ChatterboxT3ForCausalLM",
    GPT2_ARCHITECTURE: "vllm_chatterbox.t3.gpt2.model:ChatterboxT3TurboForCausalLM",
}


def register() -> None:
    from vllm import ModelRegistry

    die_with_parent()
    enforce_engine_threads()
    supported = ModelRegistry.get_supported_archs()
    for architecture, model in MODELS.items():
        if architecture not in supported:
            ModelRegistry.register_model(architecture, model)
