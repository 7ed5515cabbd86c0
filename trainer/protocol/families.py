"""The model families Home trains adapters for, by GGUF `general.architecture`, with what their layout needs.

Here (torch-free) rather than in the converter, so a command can refuse an unsupported base before it
starts a worker or trains anything else (`home eval --compare` checks both bases first); the converter
(`trainer/worker/convert.py`) reads the same table. Each family is built by llama.cpp's own converter
and run through the whole loop by tests/test_families.py.
"""

from __future__ import annotations

from pathlib import Path

SUPPORTED_ARCHS: dict[str, str] = {
    "llama": "Llama, Mistral, SmolLM2: q/k rows permuted head-wise",
    "qwen2": "Qwen2, Qwen2.5: rows as stored",
    "qwen3": "Qwen3: rows as stored (head_dim 128)",
    "gemma2": "Gemma 2: rows as stored (norm offsets live in the base, not the LoRA)",
    "gemma3": "Gemma 3: rows as stored (norm offsets live in the base, not the LoRA)",
    "phi3": "Phi-3, Phi-4-mini: fused qkv_proj → attn_qkv, gate_up_proj → ffn_up, as stored",
}


def family_refusal(arch: str, model: Path | str) -> str | None:
    """One line saying why Home cannot train for `model` (its family is not supported); None when it can."""
    if arch in SUPPORTED_ARCHS:
        return None
    return (f"{Path(model).name}: general.architecture {arch!r}: Home cannot train adapters for the {arch} "
            f"model family (supported: {', '.join(sorted(SUPPORTED_ARCHS))})")
