"""What an SFT run (trainer/worker/train.py) and a DPO run (trainer/worker/dpo.py) share around their trainer:
the checkpoint folder and the key a resume must match, the stop-aware training call, and the finished
adapter saved whole with its numbers. One place, so a fix to resume or to the stop path reaches both.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.protocol.runs import complete_checkpoints
from trainer.worker import ranks
from trainer.worker.sharding import is_sharded, save_sharded
from trainer.worker.train_progress import Progress, stop_on_signals
from vault.fsio import atomic_write_json, ensure_private_dir, replacing_dir


class TrainError(ValueError):
    """A run that cannot start as asked (nothing to resume, a checkpoint from other settings, a used base)."""

    exit_code = 2


@dataclass
class TrainResult:
    peft_model: Any  # the PeftModel, in eval mode, adapter active (the best one seen on validation)
    adapter_dir: Path | None  # out_dir/peft (save_pretrained); None when the run was stopped
    steps_done: int
    total_steps: int
    stopped: bool  # SIGINT/SIGTERM: a checkpoint was saved; register nothing, resume later
    train_losses: list[tuple[int, float]] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    best_val_loss: float | None = None
    base_val_loss: float | None = None  # the base alone (adapter disabled) on the same validation set
    tokens_per_s: float = 0.0  # real (non-padding) tokens per second of training steps
    duration_s: float = 0.0
    device: str = ""
    peak_memory_bytes: int = 0  # several processes (--gpus N): the sum of the ranks' peaks
    peak_memory_per_rank: list[int] = field(default_factory=list)
    early_stopped: bool = False
    padding: str = ""  # "padding-free" | "length-grouped"


def run_key(settings: Any, total: int, train_recs: list[dict], val_recs: list[dict]) -> dict:
    """What a checkpoint must match to be resumed: the settings that shape the run and the data it saw."""
    h = hashlib.sha256(json.dumps([[r["input_ids"] for r in train_recs], [r["input_ids"] for r in val_recs]])
                       .encode()).hexdigest()[:16]
    keep = {k: v for k, v in asdict(settings).items() if k not in ("log_every", "cpu_threads")}
    return {"settings": json.loads(json.dumps(keep)), "total_steps": total, "data": h}


def resume_point(ckpt_dir: Path, run_key: dict) -> Path:
    complete = complete_checkpoints(ckpt_dir) if ckpt_dir.is_dir() else []
    if not complete:
        raise TrainError(f"{ckpt_dir}: no checkpoint to resume from (none complete)")
    last = complete[-1]
    for p in ckpt_dir.glob("checkpoint-*"):  # cut short by a kill: transformers would count it as saved
        if p.is_dir() and p not in complete:
            shutil.rmtree(p, ignore_errors=True)
    saved_path = ckpt_dir / "settings.json"
    try:
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else None
    except (OSError, ValueError) as exc:
        raise TrainError(f"{saved_path}: unreadable ({exc}); start a new run") from None
    if saved is not None and saved != run_key:
        diff = [k for k in run_key["settings"] if saved.get("settings", {}).get(k) != run_key["settings"][k]]
        if saved.get("data") != run_key["data"]:
            diff.append("the examples")
        raise TrainError(f"{saved_path}: the checkpoint was made with different {', '.join(diff) or 'settings'}; "
                         "resume with the same data and settings, or start a new run")
    return Path(last)


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Pin torch's CPU threads for the run. On a busy machine fewer threads than cores is much faster:
    torch's OpenMP workers spin-wait, and oversubscribed spinning costs far more than it saves."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_of(model: Any) -> str:
    return next(model.parameters()).device.type


def device_label(model: Any, device: str) -> str:
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    four_bit = getattr(model, "is_loaded_in_4bit", False)  # a PeftModel forwards it from the base
    if four_bit:
        quant = getattr(model.config, "quantization_config", None)
        compute = getattr(quant, "bnb_4bit_compute_dtype", None) or (
            quant.get("bnb_4bit_compute_dtype") if isinstance(quant, dict) else None)
        dtype = f"nf4+{str(compute or 'bf16').removeprefix('torch.')}"
    else:
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return f"{device} ({name}, {dtype})"


def peak_memory(device: str) -> int:
    """CUDA: the peak allocated during training; CPU: the process's peak resident set (KiB on Linux)."""
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def prepare_checkpoints(out_dir: Path, key: dict, resume: bool) -> Path | None:
    """The checkpoint to resume from (`resume`), or a clean slate: an older run's checkpoints and best/
    here would be mistaken for this one's on --resume. Either way the key is written for the next resume.
    Several processes: rank 0 alone looks and writes; every rank gets its answer (or its refusal)."""
    outcome = None
    if ranks.world().main:
        try:
            outcome = ("ok", _prepare_checkpoints(out_dir, key, resume))
        except TrainError as exc:
            outcome = ("refused", str(exc))
    outcome = ranks.from_main(outcome)
    if outcome[0] == "refused":
        raise TrainError(outcome[1])
    return outcome[1]


def _prepare_checkpoints(out_dir: Path, key: dict, resume: bool) -> Path | None:
    ckpt_dir = out_dir / "checkpoints"
    if resume:
        resume_from = resume_point(ckpt_dir, key)
    else:
        resume_from = None
        for old in (ckpt_dir, out_dir / "best"):
            shutil.rmtree(old, ignore_errors=True)
    ensure_private_dir(ckpt_dir)
    atomic_write_json(ckpt_dir / "settings.json", key)
    return resume_from


def train_until_stopped(trainer: Any, progress: Progress, resume_from: Path | None) -> None:
    """The trainer's loop, with SIGINT/SIGTERM turned into a checkpoint and a clean return."""
    with stop_on_signals(progress.stop):
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)


def finish(peft_model: Any, trainer: Any, progress: Progress, out_dir: Path, *, device: str, t0: float,
           base_val: float, padding: str, selected: list[str] | None = None) -> TrainResult:
    """A finished run's best adapter saved whole to out_dir/peft (a torn peft/ would pass for a finished
    phase on --resume); a stopped run saves nothing more than its checkpoint."""
    peft_model.eval()
    stopped = progress.stop.requested  # the same on every rank: Progress agrees on it at each step
    adapter_dir = None
    if not stopped:
        adapter_dir = out_dir / "peft"
        if ranks.world().size > 1 and is_sharded(peft_model):  # FSDP: gathered by all, written by rank 0
            save_sharded(peft_model, progress, adapter_dir, selected)
        elif ranks.world().main:  # DDP keeps the weights identical on every rank: one reader, one writer
            progress.restore_best(peft_model)
            with replacing_dir(adapter_dir) as tmp:
                peft_model.save_pretrained(str(tmp), selected_adapters=selected, save_embedding_layers=False)
        progress.emit("phase", name="saved", detail=str(adapter_dir))
    peaks = ranks.gather_ints(peak_memory(device))
    return TrainResult(
        peft_model=peft_model, adapter_dir=adapter_dir, steps_done=trainer.state.global_step,
        total_steps=progress.total, stopped=stopped, train_losses=progress.train_losses,
        val_losses=progress.val_losses, best_val_loss=progress.best, base_val_loss=base_val,
        tokens_per_s=progress.tokens_per_s(), duration_s=round(time.time() - t0, 2),
        device=device_label(peft_model, device), peak_memory_bytes=sum(peaks),
        peak_memory_per_rank=peaks if len(peaks) > 1 else [],
        early_stopped=progress.early_stopped, padding=padding,
    )
