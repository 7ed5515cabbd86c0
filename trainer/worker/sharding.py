"""`home train --gpus N` with the base sharded over the ranks (FSDP2), for a base that does not fit one
GPU: each rank holds 1/N of the frozen weights and gathers one decoder layer at a time to compute.

Two ways, by what the installed libraries can shard:
- plain weights (bf16 on GPUs, fp32 on the CPU): transformers shards the base as it loads it
  (`from_pretrained(distributed_config=DistributedConfig(fsdp_size=N))`, `load_kwargs`): each rank reads
  only its share, never the whole model. The LoRA added on top stays whole on every rank (the Trainer
  averages its gradients over them), so saving it is what DDP does. The Trainer cannot checkpoint the
  optimizer of such a model: checkpoints hold the adapter only, and a stopped sharded run cannot resume.
  The CPU test (`--processes 2 --device cpu --fsdp`) runs this very path over gloo.
- `--4bit`: FSDP-QLoRA, the recipe bitsandbytes and PEFT document: the nf4 weights stored in the compute
  dtype (`bnb_4bit_quant_storage`) so FSDP can flat-shard them, and the Trainer's FSDP2 through
  accelerate (`fsdp_args`); its LoRA is sharded too, so rank 0 saves it gathered from every rank
  (`full_adapter_state`). On CPU processes accelerate does not turn FSDP on (it would quietly be DDP),
  so `shard_by_hand` shards the nf4 base itself (FSDP2, one unit per decoder layer), leaves the LoRA
  whole, and the Trainer takes the model as sharded at load, as for plain weights (adapter-only
  checkpoints, no resume). bitsandbytes' nf4 weights survive FSDP2's gathers on gloo too (`Linear4bit`
  restores their quantization state from the module): `--processes 2 --device cpu --fsdp --4bit` runs
  this path for real. transformers' load-time sharding cannot take them: the weights become DTensors
  without their quantization metadata, and PEFT then fails wrapping them ('DTensor' object has no
  attribute 'compress_statistics').

When: `--fsdp` asks for it (`--no-fsdp` refuses it); by default the worker shards when the base's
weights would take more than `WEIGHT_SHARE` of the smallest GPU's free memory, the rest being what the
activations, the LoRA and its optimizer need (the batch plan, trainer/worker/batch_plan.py, then fits
the activations in what is left, as for one GPU).
"""

from __future__ import annotations

from typing import Any

WEIGHT_SHARE = 0.5  # of one GPU's free memory the base's weights may take before the ranks shard it
NF4_BYTES = 0.5 + 1 / 64  # 4 bits a weight, plus an 8-bit (double-quantized) scale per 64 weights


def weight_bytes(params: int, four_bit: bool, dtype_bytes: int = 2) -> int:
    """The base's weights in memory: nf4 (`--4bit`) or the compute dtype (bf16 on GPUs)."""
    return int(params * (NF4_BYTES if four_bit else dtype_bytes))


def should_shard(params: int, four_bit: bool, free_bytes: list[int]) -> bool:
    """The default rule: shard when the weights would take more than `WEIGHT_SHARE` of the smallest
    card's free memory (a single card must hold them whole under DDP)."""
    return bool(free_bytes) and weight_bytes(params, four_bit) > WEIGHT_SHARE * min(free_bytes)


def decide(requested: bool | None, device: str, processes: int, four_bit: bool, model_path: Any) -> tuple[bool, str]:
    """(shard?, why, for the run's events). On the CPU only `--fsdp` shards (the ranks share one memory)."""
    if processes < 2:
        return False, ""
    if requested is not None:
        return requested, "--fsdp" if requested else "--no-fsdp"
    if device != "cuda" or model_path is None:
        return False, ""
    import torch

    from trainer.worker.base_cache import param_count

    params = param_count(model_path)
    free = [torch.cuda.mem_get_info(i)[0] for i in range(processes)]
    need = weight_bytes(params, four_bit)
    if should_shard(params, four_bit, free):
        return True, (f"the base's weights ({need / 2**30:.1f} GiB) exceed {WEIGHT_SHARE:.0%} of one GPU's free "
                      f"memory ({min(free) / 2**30:.1f} GiB)")
    return False, ""


def load_kwargs(four_bit: bool) -> dict:
    """`from_pretrained` arguments of a sharded rank: transformers shards plain weights as it loads them;
    nf4 weights load whole and the Trainer's FSDP shards them (`fsdp_args`)."""
    if four_bit:
        return {}
    from transformers import DistributedConfig

    from trainer.worker import ranks

    return {"distributed_config": DistributedConfig(fsdp_size=ranks.world().size)}


def trainer_args(model: Any, shard: bool, checkpointing: bool) -> dict:
    """The TrainingArguments that differ with several processes: DDP's, or a sharded base's."""
    from trainer.worker import ranks

    if not shard:  # DDP: every LoRA weight takes part in every step; no need to search the graph for unused ones
        return {"ddp_find_unused_parameters": False if ranks.world().size > 1 else None}
    if getattr(model, "is_loaded_in_4bit", False) and not is_sharded(model):
        return fsdp_args(model, checkpointing)
    return {"save_only_model": True}  # sharded at load or by hand: the Trainer cannot checkpoint its optimizer


def fsdp_args(model: Any, checkpointing: bool) -> dict:
    """TrainingArguments for FSDP2 through accelerate (FSDP-QLoRA): one shard unit per decoder layer (the
    model's `_no_split_modules`), FSDP's own activation checkpointing, and checkpoints of the adapter's
    shards, each rank its own (a full state dict would gather the whole base on rank 0 each time)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = list(getattr(inner, "_no_split_modules", None) or [])
    config = {"version": 2, "reshard_after_forward": True, "state_dict_type": "SHARDED_STATE_DICT",
              "cpu_ram_efficient_loading": False, "activation_checkpointing": checkpointing}
    if layers:
        config |= {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": layers}
    return {"fsdp": True, "fsdp_config": config}


def shard_by_hand(peft_model: Any) -> None:
    """FSDP-QLoRA on CPU processes: the nf4 base (stored as float32) sharded with FSDP2, one unit per
    decoder layer and one for the rest, its LoRA left whole on every rank; then marked the way transformers
    marks a model it sharded at load, so the Trainer treats it as the plain-weights path: no DDP wrapper,
    the LoRA broadcast from rank 0 and its gradients averaged over the ranks, the adapter saved whole.
    Why the LoRA whole: sharded, trl's cast of a quantized model's LoRA to bf16 (QLoRA's recipe) comes
    after FSDP2 has recorded fp32, and the Trainer's checkpoint cannot save DTensors."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import DistributedConfig

    from trainer.worker import ranks

    size = ranks.world().size
    mesh = init_device_mesh("cpu", (size,))
    lora = {p for p in peft_model.parameters() if p.requires_grad}  # whole on every rank, as for plain weights
    inner = peft_model.get_base_model()
    layers = set(getattr(inner, "_no_split_modules", None) or [])
    for module in inner.modules():
        if type(module).__name__ in layers:
            fully_shard(module, mesh=mesh, ignored_params=lora)
    fully_shard(peft_model, mesh=mesh, ignored_params=lora)
    inner._is_distributed_loading_by_transformers = True  # the flags and config `from_pretrained` would set
    inner._is_fsdp_managed_module = True
    inner.config.distributed_config = DistributedConfig(fsdp_size=size)


def sharded_share(model: Any) -> str:
    """For the train phase's event: the share of the base's weights this rank holds, when sharded."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for p in model.parameters():
        if isinstance(p, DTensor):
            local, total = local + p.to_local().numel(), total + p.numel()
    return f"; base sharded: {local / total:.0%} of its weights on each process" if total else ""


def is_sharded(model: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_adapter_state(model: Any) -> dict:
    """The trainable (LoRA) weights, whole: each sharded one gathered from every rank. A collective: every
    rank must call it at the same point; every rank gets the whole adapter (it is small)."""
    from torch.distributed.tensor import DTensor

    state = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            t = p.full_tensor() if isinstance(p, DTensor) else p
            state[name] = t.detach().to("cpu", copy=True)
    return state


def save_adapter(model: Any, path: str, main: bool, **kwargs: Any) -> None:
    """`save_pretrained` of a sharded PeftModel: gathered on every rank, written by rank 0 (`main`)."""
    state = full_adapter_state(model)
    if main:
        model.save_pretrained(path, state_dict=state, **kwargs)


def save_sharded(model: Any, progress: Any, adapter_dir: Any, selected: list[str] | None) -> None:
    """The finished adapter of a sharded run to `adapter_dir`: the best one on validation, whole. When
    training went past it, best/ (written whole by rank 0 at the time) is that adapter, copied."""
    import shutil

    from trainer.worker import ranks
    from vault.fsio import replacing_dir

    state = full_adapter_state(model)  # every rank, even when best/ is what gets kept: a collective
    if not ranks.world().main:
        return
    with replacing_dir(adapter_dir) as tmp:
        if progress.went_past_best() and (progress.best_dir / "adapter_model.safetensors").is_file():
            shutil.copytree(progress.best_dir, tmp, dirs_exist_ok=True)
            progress.emit("phase", name="best", detail=f"kept the adapter from step {progress.best_step} "
                          f"(validation loss {progress.best:.4f})")
        else:
            model.save_pretrained(str(tmp), state_dict=state, selected_adapters=selected,
                                  save_embedding_layers=False)


def logits_loss(model: Any, input_ids: Any, labels: Any, attention_mask: Any = None, num_items: Any = None,
                **kwargs: Any) -> tuple[Any, int, int]:
    """trainer/worker/loss.py's `target_loss` for a sharded base: through the model's own forward, whose
    logits it builds. Why: `target_loss` runs the decoder and the output layer's weight apart, and FSDP
    gathers a weight only inside its module's forward (outside it is 1/N of the weight, and a decoder
    called alone is not the root FSDP expects)."""
    import torch
    import torch.nn.functional as F

    from trainer.worker.loss import IGNORE

    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits[:, :-1]
    shifted = labels[:, 1:]
    mask = shifted != IGNORE
    picked, targets = logits[mask].float(), shifted[mask]
    n = int(targets.numel())
    loss_sum = F.cross_entropy(picked, targets, reduction="sum") if n else logits.sum() * 0.0
    correct = int((picked.argmax(-1) == targets).sum()) if n else 0
    divisor = num_items if num_items is not None else max(1, n)
    if isinstance(divisor, torch.Tensor):
        divisor = divisor.to(loss_sum.device).clamp(min=1)
    return loss_sum / divisor, n, correct
