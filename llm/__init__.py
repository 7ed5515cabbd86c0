"""Home's runtime: one resident GGUF model on llama.cpp with hot-swapped LoRA adapters.

Imports nothing else of Home's, so the trainer and benchmarks can use it alone. Heavy modules
(llama_cpp, gguf) load lazily: importing `llm` stays cheap.
"""

from .errors import AdapterError, ContextError, LLMError, ModelError
from .params import GenParams

__all__ = ["AdapterError", "ContextError", "GenParams", "LLMError", "ModelError"]
