"""The torch training run behind `python -m trainer`: load the base, tokenize, train LoRA, convert to
GGUF, verify against llama.cpp, register (`run` → `pipeline` or `per_persona`, over `stages`).

The only room that imports torch, transformers, peft and trl; it may import every other room, and none
imports it.
"""
