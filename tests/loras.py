"""Random but meaningful LoRA adapters over a real model's own tensor names and shapes (for tests/bench).

A is N(0, 1/in) so A·x keeps the activation's scale; B is N(0, scale_std²). With alpha = rank the
effective scale is 1 and each adapted projection moves by roughly sqrt(rank)·scale_std of its input's
RMS: enough to change the logits clearly, small enough that the model still writes words.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llm.gguf_meta import read_model_info
from llm.lora_gguf import write_lora_gguf

ALL_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def make_random_lora(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    rank: int = 8,
    seed: int = 0,
    scale_std: float = 0.02,
    targets: Sequence[str] = ALL_TARGETS,
    n_layers: int | None = None,
    alpha: float | None = None,
) -> Path:
    """Write a random LoRA for `model_path` at `out_path` (alpha defaults to rank: effective scale 1)."""
    info = read_model_info(model_path)
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for layer in range(info.n_layers if n_layers is None else min(n_layers, info.n_layers)):
        for target in targets:
            name = f"blk.{layer}.{target}.weight"
            if name not in info.tensors:
                continue
            out, inp = info.tensors[name]
            a = (rng.standard_normal((rank, inp)) / np.sqrt(inp)).astype(np.float32)
            b = (rng.standard_normal((out, rank)) * scale_std).astype(np.float32)
            tensors[name] = (a, b)
    if not tensors:
        raise ValueError(f"make_random_lora: none of {list(targets)} found in {model_path}")
    return write_lora_gguf(out_path, info.arch, float(rank if alpha is None else alpha), tensors)


def read_lora(path: str | os.PathLike) -> tuple[str, float, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(arch, alpha, {base name: (A (r, in), B (out, r))}) read back from a GGUF LoRA."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = reader.fields["general.architecture"].contents()
    alpha = float(reader.fields["adapter.lora.alpha"].contents())
    halves: dict[str, dict[str, np.ndarray]] = {}
    for t in reader.tensors:
        base, _, half = t.name.rpartition(".")
        halves.setdefault(base, {})[half] = np.array(t.data, dtype=np.float32).reshape(
            tuple(reversed(t.shape.tolist()))
        )
    return arch, alpha, {k: (v["lora_a"], v["lora_b"]) for k, v in halves.items()}


def register_voice(vault, model_path: str | os.PathLike, user: str = "me", ident: str | None = None,
                   scale: float = 1.0, rank: int = 4) -> str:
    """A random voice adapter written into `vault`, registered, and set as `user`'s voice; returns its id."""
    from vault.manifest import AdapterEntry, ManifestStore

    ident = ident or f"{user}-voice"
    target = vault.adapters_dir / ident / "adapter.gguf"
    target.parent.mkdir(parents=True)
    make_random_lora(model_path, target, rank=rank)
    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry(id=ident, name=f"{user}'s voice", file=f"adapters/{ident}/adapter.gguf",
                                   base={"fingerprint": read_model_info(model_path).fingerprint}, kind="voice",
                                   scale=scale))
        m.ensure_user(user)["voice_adapter"] = ident
    return ident


PEFT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_random_peft(base_dir: str | os.PathLike, gguf: str | os.PathLike, out: str | os.PathLike, rank: int = 8,
                     seed: int = 0, gain: float = 2.0) -> Path:
    """A random PEFT LoRA on every projection of the transformers model in `base_dir`, saved as a vault
    keeps a trained one: `out/peft/` beside its GGUF conversion `out/adapter.gguf` (returned). A and B
    both random (peft's `init_lora_weights=False`), times `gain`: each changes a greedy reply."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.worker.convert import convert_peft_to_gguf

    out = Path(out)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=list(PEFT_TARGETS))
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(gain)
    peft_model.save_pretrained(out / "peft")
    convert_peft_to_gguf(out / "peft", Path(gguf), out / "adapter.gguf")
    return out / "adapter.gguf"
