"""The CPU guard: a model over ~1B parameters is not trained on the CPU unless the user insists.

Why: LoRA on the CPU is fine for the 135M default (~100 real tokens/s on 2 cores), but the cost grows
with the parameters: a 3B model is ~20× slower, so a retrain the user expects in minutes would run for
days while the machine is unusable. The refusal says how long it would take so the choice is informed.
Torch-free: the app checks before it starts a worker, the worker checks again once it knows the data.
"""

from __future__ import annotations

import os
import shutil
import subprocess

CPU_PARAM_LIMIT = 1.0e9  # HOME_CPU_TRAIN_LIMIT (parameters) moves it, e.g. for a fast machine
REF_PARAMS, REF_TOKENS_PER_S, REF_CORES = 135e6, 100.0, 2  # this trainer, SmolLM2-135M, 2 cores (measured)
TOKENS_PER_TURN = 150  # a chat turn with its context, for estimates made before the data is read
EPOCHS = 3


class CpuGuardError(ValueError):
    """A model too large to train on the CPU without --allow-cpu."""

    exit_code = 2


def model_params(info) -> int:
    """Parameters of a base model from its GGUF tensor shapes (llm.gguf_meta.ModelInfo)."""
    total = 0
    for shape in info.tensors.values():
        n = 1
        for d in shape:
            n *= int(d)
        total += n
    return total


def cpu_tokens_per_s(params: int, cores: int | None = None) -> float:
    """Training throughput on the CPU, scaled from the measured reference by parameters and cores."""
    cores = cores or os.cpu_count() or 1
    return REF_TOKENS_PER_S * (REF_PARAMS / max(params, 1)) * (cores / REF_CORES)


def cpu_refusal(name: str, params: int, tokens: int | None = None, cores: int | None = None) -> str | None:
    """None when the model is small enough; else one line with the estimated time and the way out."""
    if params <= float(os.environ.get("HOME_CPU_TRAIN_LIMIT") or CPU_PARAM_LIMIT):
        return None
    rate = cpu_tokens_per_s(params, cores)
    if tokens is None:
        tokens, per = 1000 * TOKENS_PER_TURN * EPOCHS, " per 1,000 chat turns"
    else:
        per = " for this data"
    hours = tokens / rate / 3600
    return (f"{name} has {params / 1e9:.1f}B parameters: training it on the CPU would take about "
            f"{hours:,.0f} hours{per} (~{rate:.0f} tokens/s on {cores or os.cpu_count()} cores); train on a "
            "CUDA GPU (`home doctor` says if one is seen), or pass --allow-cpu to train here anyway")


def cuda_visible() -> bool:
    """An NVIDIA GPU the trainer could use, asked of nvidia-smi (no torch in the app)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "GPU" in out


def check_cpu(device_kind: str, info, examples: list, epochs: float | None, steps: int | None,
              batch_size: int, allow_cpu: bool) -> None:
    """The worker's check, once the device and the data are known: raises CpuGuardError."""
    if device_kind != "cpu" or allow_cpu:
        return
    per_example = sum(len(ex.target) + sum(len(m["content"]) for m in ex.prompt_messages())
                      for ex in examples) / max(1, len(examples)) / 4  # ~4 characters a token
    n = steps * batch_size if steps else len(examples) * (epochs or EPOCHS)
    why = cpu_refusal(info.name, model_params(info), int(n * per_example))
    if why:
        raise CpuGuardError(why)
