"""The one writer of GGUF LoRA adapters, in the layout llama.cpp's `llama_adapter_lora_init` reads.

Tests write random adapters with it; the trainer writes converted peft adapters with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def write_lora_gguf(
    path: str | os.PathLike,
    arch: str,
    alpha: float,
    tensors: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    name: str | None = None,
    dtype: type = np.float32,
) -> Path:
    """Write `tensors` ({base tensor name: (A (r, in), B (out, r))}) as a GGUF LoRA at `path`.

    peft's A and B go in unchanged: numpy's (rows, cols) is GGUF's ne=(cols, rows), which is what
    llama.cpp expects (lora_a ne=[n_in, r], lora_b ne=[r, n_out]). Written to a temp file and renamed,
    so a reader never sees half an adapter.
    """
    import gguf  # heavy-ish import, only needed when writing

    if not tensors:
        raise ValueError("write_lora_gguf: no tensors to write")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    if name:
        writer.add_string("general.name", name)
    for base_name, (a, b) in tensors.items():
        a = np.ascontiguousarray(a, dtype=dtype)
        b = np.ascontiguousarray(b, dtype=dtype)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(
                f"write_lora_gguf: {base_name}: A {a.shape} and B {b.shape} are not (r, in) and (out, r)"
            )
        writer.add_tensor(f"{base_name}.lora_a", a)
        writer.add_tensor(f"{base_name}.lora_b", b)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
