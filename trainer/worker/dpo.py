"""Preference training (DPO, trl's DPOTrainer) of a LoRA adapter from pick-best pairs.

Why DPO and not ORPO/SimPO: the point is to move the user's *existing* voice toward the replies they
picked without forgetting it, which is exactly DPO's reference term (the starting adapter); ORPO and
SimPO drop the reference and would drift from the voice the user already has on a few dozen pairs.

Memory: no second model. Starting from the user's voice adapter, its peft weights are loaded trainable
and trl copies them into a frozen "ref" adapter on the same base (its reference forward switches
adapters); starting from the base, a fresh LoRA is trained and the reference is the base with the
adapter disabled. trl's fused LM head computes log-probs without the full logits. So the peak is one
base plus two LoRA copies: ~1.4 GB for the default model in fp32 on the CPU.

Same brakes and report as SFT (trainer/worker/train_progress.py): step/eval/checkpoint events, early
stopping on the held-out DPO loss, SIGINT/SIGTERM → checkpoint, `--resume` from it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainer.protocol.memwatch import bound_allocator
from trainer.worker import loop
from trainer.worker.base import Base
from trainer.worker.loop import TrainError, TrainResult
from trainer.worker.train import LR_SCHEDULERS, TrainSettings, check_convertible, lora_config, total_steps_for
from trainer.worker.train_progress import Progress


def train_dpo(base: Base, train_pairs: list, val_pairs: list, settings: TrainSettings, out_dir: Path,
              start: Path | None = None, beta: float = 0.1, emit=None, resume: bool = False) -> TrainResult:
    """Train one adapter on preference pairs; `start`: a peft adapter folder to continue (its copy is the
    reference), None: a fresh LoRA over the base (the base is the reference). Returns a `TrainResult`
    whose `peft_model` holds only the trained adapter ("default"); `val_losses` are DPO losses."""
    import torch
    from peft import PeftModel, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import set_seed

    emit = emit or (lambda kind, **fields: None)
    bound_allocator()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    t0 = time.time()
    if not val_pairs:
        raise TrainError("no held-out pairs: split them with trainer.data.preferences.split_pairs")
    model = base.model
    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise TrainError("the base model already carries LoRA layers from an earlier run: unload them first")
    device = loop.device_of(model)
    total = total_steps_for(len(train_pairs), settings)
    eval_every = settings.eval_every or max(1, min(200, -(-total // 4)))
    save_every = settings.save_every or eval_every

    set_seed(settings.seed)
    if start is not None:
        peft_model = PeftModel.from_pretrained(model, str(start), is_trainable=True)
    else:
        config = lora_config(settings)
        check_convertible(config, model)
        peft_model = get_peft_model(model, config)
    check_convertible(peft_model.peft_config["default"], model)

    train_recs = [p.to_record() for p in train_pairs]
    val_recs = [p.to_record() for p in val_pairs]
    key = loop.run_key(settings, total, [{"input_ids": [p.key()]} for p in train_pairs],
                  [{"input_ids": [p.key()]} for p in val_pairs])
    key["method"], key["beta"], key["start"] = "dpo", beta, str(start) if start else None
    resume_from = loop.prepare_checkpoints(out_dir, key, resume)

    emit("phase", name="tokenize", detail=f"{len(train_pairs)} train / {len(val_pairs)} held-out pairs")
    with loop.cpu_threads(settings.cpu_threads if device == "cpu" else None):
        trainer = _make_trainer(peft_model, base.tokenizer, train_recs, val_recs, settings, beta, ckpt_dir, total,
                                eval_every, save_every, device)
        emit("phase", name="baseline", detail="held-out DPO loss at the starting point")
        base_val = float(trainer.evaluate()["eval_loss"])
        emit("eval", step=0, total_steps=total, val_loss=round(base_val, 5), base=True)
        progress = Progress(emit, total, settings.patience, out_dir / "best", base_val)
        trainer.add_callback(progress)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        emit("phase", name="train", detail=f"DPO: {total} steps, batch {settings.batch_size}, beta {beta}, "
             f"{'from ' + start.parent.name if start else 'a fresh adapter over the base'} on {device}")
        loop.train_until_stopped(trainer, progress, resume_from)

    if "ref" in peft_model.peft_config:  # the reference copy has done its job; only "default" is the result
        peft_model.set_adapter("default")
        peft_model.delete_adapter("ref")
    return loop.finish(peft_model, trainer, progress, out_dir, device=device, t0=t0, base_val=base_val,
                       padding="padded", selected=["default"])


def _make_trainer(peft_model: Any, tokenizer: Any, train_recs: list[dict], val_recs: list[dict],
                  settings: TrainSettings, beta: float, ckpt_dir: Path, total: int, eval_every: int,
                  save_every: int, device: str) -> Any:
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback
    from trl import DPOConfig, DPOTrainer

    cuda_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    args = DPOConfig(
        output_dir=str(ckpt_dir), max_steps=total, per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.lr, lr_scheduler_type=LR_SCHEDULERS[settings.schedule],
        warmup_steps=settings.warmup_ratio, neftune_noise_alpha=settings.neftune or None,
        weight_decay=0.0, max_grad_norm=1.0, seed=settings.seed, data_seed=settings.seed,
        bf16=cuda_bf16, fp16=device == "cuda" and not cuda_bf16, use_cpu=device == "cpu",
        beta=beta, max_length=settings.max_length, truncation_mode="keep_end",
        logging_strategy="steps", logging_steps=settings.log_every,
        eval_strategy="steps", eval_steps=eval_every, save_strategy="steps", save_steps=save_every,
        save_total_limit=2, report_to="none", disable_tqdm=True, log_level="error", dataloader_num_workers=0,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(model=peft_model, ref_model=None, args=args, train_dataset=Dataset.from_list(train_recs),
                         eval_dataset=Dataset.from_list(val_recs), processing_class=tokenizer)
    for cb in (PrinterCallback, ProgressCallback):  # they print to stdout, which carries our JSON events
        trainer.remove_callback(cb)
    return trainer
