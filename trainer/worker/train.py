"""Train a LoRA adapter on the base with peft + trl: examples in, a peft adapter and its numbers out.

Read top to bottom, `train_adapter` is the recipe: refuse a LoRA config the GGUF converter could not
carry → tokenize (completion-only labels, trainer/worker/dataset.py) → wrap the base in LoRA → measure the base
on the validation set → SFTTrainer steps, with `Progress` (trainer/worker/train_progress.py) reporting each
step and validation pass as events, stopping early when validation stops improving, and turning
SIGINT/SIGTERM into a checkpoint and a clean return → the best adapter saved to `out_dir/peft`.

Device policy: CUDA trains in bf16 (fp16 where bf16 is missing), `--4bit` is QLoRA over bitsandbytes;
the CPU trains in fp32. Padded batches are grouped by length; padding-free batches (no padding at all)
are used when FlashAttention is installed, the one attention kernel that keeps packed sequences apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.data.examples import Example
from trainer.protocol.memwatch import bound_allocator
from trainer.worker import ranks
from trainer.worker.base import Base
from trainer.worker.batch_plan import BatchPlan, plan_batches
from trainer.worker.dataset import LengthGroupedSampler, tokenize
from trainer.worker.loop import (  # noqa: F401  TrainError, TrainResult: this module's API too
    TrainError,
    TrainResult,
    cpu_threads,
    device_of,
    finish,
    prepare_checkpoints,
    run_key,
    train_until_stopped,
)
from trainer.worker.sharding import is_sharded, logits_loss, shard_by_hand, sharded_share, trainer_args
from trainer.worker.train_progress import Progress

Emit = Callable[..., Any]
# Phi3 keeps q/k/v and gate/up fused (qkv_proj, gate_up_proj); a name a model lacks matches nothing.
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj",
                   "gate_up_proj")

# Job.modules → the projections LoRA adapts; every name above is in exactly one group
MODULE_TARGETS = {"all": ALL_PROJECTIONS,
                  "attention": ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"),
                  "mlp": ("gate_proj", "up_proj", "down_proj", "gate_up_proj")}

LR_SCHEDULERS = {"cosine": "cosine", "constant": "constant_with_warmup"}  # Job.schedule → transformers' name


@dataclass
class TrainSettings:
    steps: int | None = None  # optimizer steps; None: computed from `epochs`
    epochs: float | None = 3.0  # used only when `steps` is None
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ALL_PROJECTIONS
    lr: float = 2e-4
    schedule: str = "cosine"  # after warmup: cosine to zero, or constant (trainer/protocol/job.py SCHEDULES)
    neftune: float = 0.0  # NEFTune noise alpha on the input embeddings while training; 0: none
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    val_fraction: float = 0.1  # recorded with the run; the split itself is trainer.worker.dataset.split_examples
    seed: int = 0
    eval_every: int | None = None  # steps between validation passes; None: validation_interval(steps)
    patience: int = 3  # validation passes without improvement before stopping early; 0: never
    warmup_ratio: float = 0.05
    save_every: int | None = None  # steps between checkpoints; None: same as eval_every
    log_every: int = 1  # steps between `step` events
    gradient_checkpointing: bool | None = None  # None: when memory needs it (trainer/worker/batch_plan.py)
    cpu_threads: int | None = None  # torch threads on the CPU; None: torch's default (all cores)
    fsdp: bool = False  # several processes: shard the base over them (trainer/worker/sharding.py), not DDP


def total_steps_for(n_train: int, settings: TrainSettings) -> int:
    """Optimizer steps the run will take: fixed up front so a resumed run ends where the first would have."""
    if settings.steps is not None:
        if settings.steps < 1:
            raise TrainError(f"steps: expected a positive number, got {settings.steps}")
        return settings.steps
    epochs = settings.epochs if settings.epochs is not None else 3.0
    if epochs <= 0:
        raise TrainError(f"epochs: expected a positive number, got {epochs}")
    per_epoch = math.ceil(math.ceil(n_train / settings.batch_size) / settings.grad_accum)
    return max(1, math.ceil(per_epoch * epochs))


def validation_interval(total: int) -> int:
    """Steps between validation passes: about ten per run, but at least two apart once a run is over four
    steps. A pass scores the whole validation split; a 9-step CPU voice run validated every step (~15% of
    its time). transformers validates the last step too, so the adapter kept at the end was measured."""
    return max(2 if total > 4 else 1, min(200, math.ceil(total / 10)))


def lora_config(settings: TrainSettings) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.targets), bias="none", task_type="CAUSAL_LM")


def check_convertible(peft_config: Any, model: Any) -> None:
    """Refuse, before any training, a LoRA config the GGUF converter cannot carry (when it is installed)."""
    try:
        from trainer.worker.convert import check_lora_config
    except ModuleNotFoundError as exc:
        if exc.name != "trainer.worker.convert":
            raise
        return
    check_lora_config(peft_config, model)


def train_adapter(base: Base, train_examples: list[Example], val_examples: list[Example],
                  settings: TrainSettings, out_dir: Path, emit: Emit | None = None,
                  resume: bool = False) -> TrainResult:
    """Train one LoRA adapter on `base`; see the module docstring for the stages.

    `out_dir` gets `checkpoints/` (trainer checkpoints, `settings.json`), `best/` (the best adapter so
    far) and, unless stopped, `peft/` (the final adapter). `resume=True` continues from the latest
    checkpoint with the same total steps. `base.model` is wrapped in place: call
    `result.peft_model.unload()` before training on the same base again.
    """
    import torch
    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import set_seed

    emit = emit or (lambda kind, **fields: None)
    bound_allocator()  # idempotent; the worker already did it, an in-process caller may not have
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    t0 = time.time()
    if not val_examples:
        raise TrainError("no validation examples: split the data with trainer.worker.dataset.split_examples")
    model = base.model
    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise TrainError("the base model already carries LoRA layers from an earlier run: unload them first")
    device = device_of(model)
    world = ranks.world()  # one process, or one of `home train --gpus N`'s: settings.batch_size is the global batch
    if settings.batch_size % world.size:
        raise TrainError(f"batch size {settings.batch_size}: the global batch must split evenly over {world.size} processes")
    total = total_steps_for(len(train_examples), settings)
    eval_every = settings.eval_every or validation_interval(total)
    save_every = settings.save_every or eval_every

    peft_config = lora_config(settings)
    check_convertible(peft_config, model)

    emit("phase", name="tokenize", detail=f"{len(train_examples)} train / {len(val_examples)} validation examples")
    train_recs = tokenize(train_examples, base.tokenizer, settings.max_length)
    val_recs = sorted(tokenize(val_examples, base.tokenizer, settings.max_length), key=lambda r: len(r["input_ids"]))
    resume_from = prepare_checkpoints(out_dir, run_key(settings, total, train_recs, val_recs), resume)
    plan = plan_batches(model.config, settings.batch_size // world.size, [len(r["input_ids"]) for r in train_recs],
                        2 if device == "cuda" else 4, device, settings.gradient_checkpointing,
                        padded=not _padding_free_ok(model, device))
    gc = plan.checkpointing

    # Not when sharded (as trl does): it upcasts the norms to fp32, and FSDP wants one dtype per layer
    if getattr(model, "is_loaded_in_4bit", False) and not (settings.fsdp and world.size > 1):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    padding_free = _padding_free_ok(model, device)
    if padding_free:
        model.set_attn_implementation("flash_attention_2")
    set_seed(settings.seed)  # LoRA's A matrices are drawn here
    peft_model = get_peft_model(model, peft_config)
    if settings.fsdp and world.size > 1 and device == "cpu" and getattr(model, "is_loaded_in_4bit", False):
        shard_by_hand(peft_model)  # accelerate shards GPU processes only (trainer/worker/sharding.py)
    if world.size > 1 and not settings.fsdp:  # DDP: see ranks.average_gradients for why by hand
        ranks.average_gradients(peft_model)

    with cpu_threads(settings.cpu_threads if device == "cpu" else None):
        trainer = _make_trainer(peft_model, base.tokenizer, train_recs, val_recs, settings, ckpt_dir, total,
                                eval_every, save_every, device, plan, padding_free)
        emit("phase", name="baseline", detail="validation loss of the base model (adapter disabled)")
        with peft_model.disable_adapter():
            base_val = float(trainer.evaluate()["eval_loss"])
        emit("eval", step=0, total_steps=total, val_loss=round(base_val, 5), base=True)

        progress = Progress(emit, total, settings.patience, out_dir / "best", base_val)
        trainer.add_callback(progress)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        emit("phase", name="train", detail=f"{total} steps, batch {settings.batch_size}x{settings.grad_accum}, "
             f"rank {settings.rank}, {'padding-free' if padding_free else 'length-grouped'} batches on {device}"
             f"{f' x {world.size} processes' if world.size > 1 else ''}; {plan.describe()}{sharded_share(model)}")
        train_until_stopped(trainer, progress, resume_from)
    return finish(peft_model, trainer, progress, out_dir, device=device, t0=t0, base_val=base_val,
                  padding="padding-free" if padding_free else "length-grouped")


def _make_trainer(peft_model: Any, tokenizer: Any, train_recs: list[dict], val_recs: list[dict],
                  settings: TrainSettings, ckpt_dir: Path, total: int, eval_every: int, save_every: int,
                  device: str, plan: BatchPlan, padding_free: bool) -> Any:
    """An SFTTrainer over pre-tokenized records (trl's own preparation skipped: our labels stand), whose
    loss never builds the logits (trainer/worker/loss.py) and whose steps follow the memory plan."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from trainer.worker.hf_compat import checkpointing_kwargs
    from trainer.worker.loss import target_loss

    cuda_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    # several processes: DDP, or the base sharded over them (trainer/worker/sharding.py says how)
    sharding = trainer_args(peft_model, settings.fsdp and ranks.world().size > 1, plan.checkpointing)
    args = SFTConfig(
        output_dir=str(ckpt_dir), max_steps=total, per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum * plan.accumulation,
        learning_rate=settings.lr, lr_scheduler_type=LR_SCHEDULERS[settings.schedule],
        warmup_steps=settings.warmup_ratio, neftune_noise_alpha=settings.neftune or None,
        weight_decay=0.0, max_grad_norm=1.0, seed=settings.seed, data_seed=settings.seed,
        bf16=cuda_bf16, fp16=device == "cuda" and not cuda_bf16, use_cpu=device == "cpu",
        **checkpointing_kwargs(plan.checkpointing and not sharding.get("fsdp")),  # else FSDP's own
        logging_strategy="steps", logging_steps=settings.log_every,
        eval_strategy="steps", eval_steps=eval_every, save_strategy="steps", save_steps=save_every,
        save_total_limit=2, report_to="none", disable_tqdm=True, log_level="error",
        dataloader_num_workers=0, completion_only_loss=True, padding_free=padding_free,
        use_liger_kernel=device == "cuda" and _liger_available(),
        max_length=None if padding_free else settings.max_length,
        dataset_kwargs={"skip_prepare_dataset": True},
        **sharding,
    )
    lengths = [len(r["input_ids"]) for r in train_recs]
    loss_of = logits_loss if sharding.get("fsdp") or is_sharded(peft_model) else target_loss  # sharded: own forward

    class _Trainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            if padding_free:  # no padding to save: plain shuffling mixes lengths within a batch
                return super()._get_train_sampler(train_dataset)
            return LengthGroupedSampler(lengths, settings.batch_size * settings.grad_accum, seed=settings.seed)

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            """Cross-entropy over target tokens only, never the full logits; trl's metrics kept."""
            mode = "train" if model.training else "eval"
            rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "labels", "attention_mask")}
            loss, n, correct = loss_of(model, inputs["input_ids"], inputs["labels"],
                                           inputs.get("attention_mask"), num_items=num_items_in_batch, **rest)
            procs = self.accelerator.num_processes
            if procs > 1 and num_items_in_batch is not None:
                # num_items counts every rank's target tokens and DDP averages the ranks' gradients: scaled
                # back, the step is the single-process step on the same global batch (as Trainer does)
                loss = loss * procs
            self._metrics[mode]["mean_token_accuracy"].append(correct / n if n else 0.0)
            if mode == "train":
                mask = inputs.get("attention_mask")
                seen = int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
                self._total_train_tokens += ranks.sum_ints(seen) if procs > 1 else seen
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return (loss, {"loss": loss}) if return_outputs else loss

    trainer = _Trainer(model=peft_model, args=args, train_dataset=Dataset.from_list(train_recs),
                       eval_dataset=Dataset.from_list(val_recs), processing_class=tokenizer)
    for cb in (PrinterCallback, ProgressCallback):  # they print to stdout, which carries our JSON events
        trainer.remove_callback(cb)
    return trainer


def _liger_available() -> bool:
    """Liger's fused RMSNorm/SwiGLU/RoPE kernels (+16–21% tokens/s measured on an H100) when installed;
    its fused cross-entropy is not needed: trainer/worker/loss.py never builds the logits either."""
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def _padding_free_ok(model: Any, device: str) -> bool:
    """Padding-free batches need a varlen attention kernel: FlashAttention 2/3 on a CUDA GPU."""
    if device != "cuda":
        return False
    from transformers.utils import is_flash_attn_2_available

    return bool(is_flash_attn_2_available()) and hasattr(model, "set_attn_implementation")


