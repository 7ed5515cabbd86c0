"""Home's runtime: one resident GGUF model on llama.cpp with hot-swapped LoRA adapters.

Imports nothing else of Home's, so the trainer and benchmarks can use it alone.
"""
