"""GPU offload: how many of the model's layers llama.cpp keeps on the GPU, and what the GPU has left.

Why a module of its own: the engine, `home doctor` and the benches must agree on one default (all
layers when this llama.cpp can offload, else none) and on one way to count what was offloaded, so a
bench's bare `llama_cpp.Llama` gets exactly the engine's setting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

ALL_LAYERS = -1  # llama.cpp's -ngl -1: every layer, the output layer included


@dataclass(frozen=True)
class Offload:
    """Where a loaded model runs. `requested` is what llama.cpp was given (pass it to a bare Llama)."""

    built_in: bool  # this llama.cpp has a GPU backend with a device (llama_supports_gpu_offload)
    requested: int  # n_gpu_layers given to llama.cpp: -1 all, 0 none, N the last N layers
    layers: int  # layers on the GPU
    total: int  # layers llama.cpp can offload: the blocks plus the output layer

    def __str__(self) -> str:
        text = f"{self.layers}/{self.total} layers on the GPU"
        return text if self.layers else f"{text} (the model runs on the CPU)"


def offload_built_in() -> bool:
    """True when llama.cpp can put layers on a GPU here (a GPU build AND a device it can see)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def default_gpu_layers() -> int:
    """All layers when offload is built in, else 0: asking a CPU build for GPU layers only misleads."""
    return ALL_LAYERS if offload_built_in() else 0


def check_gpu_layers(value: int) -> int:
    """-1 or a count; llama.cpp would read any other negative number as "all", silently."""
    if isinstance(value, bool) or not isinstance(value, int) or value < ALL_LAYERS:
        raise ValueError(f"gpu layers: expected -1 (all) or a number of layers >= 0, got {value!r}")
    return value


def offload_of(model, requested: int) -> Offload:
    """What llama.cpp did with `requested` for a loaded `llama_model` (its own counting rule:
    min(requested, n_layer + 1), and nothing without a GPU device)."""
    import llama_cpp

    total = int(llama_cpp.llama_model_n_layer(model)) + 1
    built_in = offload_built_in()
    wanted = total if requested < 0 else requested
    return Offload(built_in, requested, min(wanted, total) if built_in else 0, total)


def backends() -> list[str]:
    """The ggml backends compiled into this llama.cpp ("CUDA", "Metal", "CPU", …), from its system info."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return list(dict.fromkeys(re.findall(r"(?:^|\|)\s*([A-Za-z][\w-]*) : ", text)))


def describe_offload() -> str:
    """One line for `home doctor`: is GPU offload built in, and with which backend."""
    gpus = [b for b in backends() if b.upper() not in ("CPU", "BLAS", "ACCELERATE", "AMX")]
    if offload_built_in():
        return f"GPU offload: built in ({', '.join(gpus) or 'GPU backend'})"
    if gpus:
        return f"GPU offload: built in ({', '.join(gpus)}) but llama.cpp sees no GPU device"
    return "GPU offload: not built in (CPU build of llama.cpp)"


def vram() -> str:
    """VRAM used/total per NVIDIA GPU (nvidia-smi), or why there is nothing to report."""
    smi = shutil.which("nvidia-smi")
    if smi is None and sys.platform == "darwin":
        return "Apple GPU: Metal shares the system's memory (no separate VRAM)"
    if smi is None:
        return "no GPU visible (no nvidia-smi)"
    query = "--query-gpu=index,name,memory.used,memory.total"
    try:
        out = subprocess.run([smi, query, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no GPU visible (nvidia-smi failed: {exc})"
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            i, name, used, total = parts
            rows.append(f"GPU {i} {name}: {used}/{total} MiB VRAM used")
    return "; ".join(rows) or "no GPU visible (nvidia-smi lists none)"
