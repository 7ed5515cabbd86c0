"""How a training step fits in memory: micro-batch size, gradient accumulation and activation
checkpointing, chosen from the model's shape, the data's lengths and the memory there is.

Why not always checkpoint: it recomputes every layer's forward in the backward pass (~30% more work),
which a GPU with room to spare should not pay. Why not never: without it a CPU step of the 135M default
on 8 × 480-token examples keeps ~15 GB of activations (measured: the run that the OOM killer took).
So: keep everything when the estimate fits the budget; else checkpoint; and if even checkpointed
activations do not fit, split each optimizer step into smaller micro-batches (the effective batch and
the loss stay the same: the loss is normalised by the step's target tokens).

The CPU budget is a third of the memory available, between 1 and 2.5 GiB (`cpu_budget`): at a flat
1 GiB a 512-token voice window was always checkpointed (4 x 2), 1.47x slower than 1 x 8 unchecked, which
2.5 GiB allows (bench/trainer_throughput.py --budgets).

The estimate counts fp32/bf16 values kept per token and layer (measured on SmolLM2-135M shapes: ~30 ×
hidden + 13 × intermediate floats with LoRA on all seven projections, dropout and SDPA attention), plus
attention scores when a padding mask forces SDPA's math kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

PER_TOKEN_HIDDEN = 30  # values kept per token and layer, per unit of hidden size
PER_TOKEN_INTER = 13  # … per unit of MLP intermediate size
CPU_FLOOR = 1.0 * 2**30  # activations on the CPU when memory is short (or unknown): the 135M model checkpointed
CPU_CAP = 2.5 * 2**30  # … at most: the 135M model unchecked at 1 x 512 tokens, its whole run within 3 GB
CPU_SHARE = 1 / 3  # of the memory available (MemAvailable) when the run plans
GPU_SHARE = 0.7  # of the GPU memory free after the model is loaded
# On CUDA in bf16 the constants above (fp32, CPU) overcount: measured on an H200 (2026-11-30, plain
# HF+peft, no checkpointing, no Liger), a random Llama-8B at 4 x 1024 kept ~44 GiB of activations and
# a 1B at 8 x 1024 ~24 GiB beside its logits, 0.55-0.58 of the CPU estimate; and SDPA keeps no scores
# there (its memory-efficient kernel takes the padding mask). Without this, Home checkpointed the 8B
# at 4.1 of 76 GiB and trained at 0.63x HF+peft's speed.
GPU_SCALE = 0.6


@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int  # sequences per forward/backward
    accumulation: int  # micro-batches per optimizer step
    checkpointing: bool
    estimate_bytes: int  # activations of the largest micro-batch, as planned
    budget_bytes: int

    def describe(self) -> str:
        ck = "activation checkpointing" if self.checkpointing else "no checkpointing"
        return (f"micro-batch {self.micro_batch} x {self.accumulation}, {ck} (activations ~"
                f"{self.estimate_bytes / 2**30:.2f} of {self.budget_bytes / 2**30:.2f} GiB)")


def _shape(config: Any) -> tuple[int, int, int, int]:
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(c.hidden_size)
    return (hidden, int(getattr(c, "intermediate_size", 4 * hidden)), int(c.num_hidden_layers),
            int(getattr(c, "num_attention_heads", 1)))


def activation_bytes(config: Any, micro: int, length: int, elt: int, checkpointing: bool,
                     padded: bool = True, scale: float = 1.0) -> int:
    """Activations one forward+backward of `micro` sequences of `length` tokens keeps at its peak."""
    hidden, inter, layers, heads = _shape(config)
    per_layer = int(micro * length * (PER_TOKEN_HIDDEN * hidden + PER_TOKEN_INTER * inter) * elt * scale)
    if padded:  # a padding mask sends SDPA to its math kernel: scores, softmax and its grad per head
        per_layer += 3 * micro * heads * length * length * elt
    if not checkpointing:
        return layers * per_layer
    return layers * micro * length * hidden * elt + per_layer  # each layer's input, one layer live


def available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """Memory the kernel says a new allocation can take without swapping (MemAvailable), or None."""
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None  # not Linux, or a line it cannot read: the floor's plan (cpu_budget)
    return None


def cpu_budget(available: int | None) -> int:
    """A third of the memory available, between CPU_FLOOR and CPU_CAP. Why not the floor always: at 1 GiB
    a 512-token voice window is always checkpointed, and a CPU step pays ~1.5x for it while the machine
    has gigabytes free (bench/trainer_throughput.py --budgets). Why a cap: the default model's run stays
    within 3 GB on any machine; why a share: a 16 GB laptop with a browser open keeps two thirds of
    what it had, and with under 3 GiB available the plan is the floor's, as before."""
    if available is None:
        return int(CPU_FLOOR)
    return int(min(CPU_CAP, max(CPU_FLOOR, CPU_SHARE * available)))


def budget(device: str) -> int:
    """Bytes the activations may take: HOME_TRAIN_ACTIVATIONS_GB if set, else a share of what is free."""
    if os.environ.get("HOME_TRAIN_ACTIVATIONS_GB"):
        return int(float(os.environ["HOME_TRAIN_ACTIVATIONS_GB"]) * 2**30)
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(GPU_SHARE * free)
    return cpu_budget(available_bytes())


def plan_batches(config: Any, batch_size: int, lengths: list[int], elt: int, device: str,
                 checkpointing: bool | None = None, padded: bool = True,
                 budget_bytes: int | None = None) -> BatchPlan:
    """The fastest plan that fits. On the CPU smaller micro-batches cost almost nothing (measured 68 tok/s
    at 1 × 480 tokens vs 54 at 8 × 480, where memory traffic dominates) and checkpointing costs its
    recompute (44 tok/s), so micro-batches shrink first; on a GPU small micro-batches waste the device,
    so checkpointing comes first. `checkpointing` True/False forces it either way."""
    longest = max(lengths) if lengths else 1
    cap = budget(device) if budget_bytes is None else budget_bytes
    divisors = [d for d in range(batch_size, 0, -1) if batch_size % d == 0]
    if checkpointing is not None:
        order = [(checkpointing, d) for d in divisors]
    elif device == "cpu":
        order = [(False, d) for d in divisors] + [(True, d) for d in divisors]
    else:
        order = [(False, batch_size)] + [(True, d) for d in divisors]
    cuda = device == "cuda"
    scale, padded = (GPU_SCALE, False) if cuda else (1.0, padded)
    for ck, micro in order:
        est = activation_bytes(config, micro, longest, elt, ck, padded and micro > 1, scale)
        if est <= cap:
            return BatchPlan(micro, batch_size // micro, ck, est, cap)
    ck = order[-1][0]  # nothing fits: the smallest step there is
    return BatchPlan(1, batch_size, ck, activation_bytes(config, 1, longest, elt, ck, False, scale), cap)
