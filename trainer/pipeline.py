"""One training run, top to bottom: dataset → train → convert → verify → evaluate → register.

Each stage is a function with typed inputs and outputs (see the modules it calls); this file only
sequences them, reports progress as events, and makes sure that a run that stops or fails registers
nothing. Read it as the recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from trainer.job import Job
from trainer.runs import find_resumable, new_run, write_state

Emit = Callable[..., dict]
PROBES = 6  # validation examples used as verification probes


class RunStopped(Exception):
    """SIGINT/SIGTERM stopped training at a step boundary; a checkpoint was saved."""

    exit_code = 130


class DatasetTooSmall(ValueError):
    exit_code = 2


class VerificationFailed(Exception):
    exit_code = 1


def run(job: Job, emit: Emit) -> dict:
    """Execute `job`; returns the registered manifest entry. Raises on stop or failure (nothing registered)."""
    from llm.gguf_meta import read_model_info
    from llm.models import resolve_model
    from vault.layout import Vault

    vault = Vault.open(job.vault)
    if job.resume:
        run_dir, job = find_resumable(vault, job)
        write_state(run_dir, "running")
    else:
        run_dir = new_run(vault, job)
    model_path = resolve_model(job.model)
    info = read_model_info(model_path)
    emit("started", run_dir=str(run_dir), adapter=job.adapter_name, source=job.source, model=info.name,
         resume=job.resume)
    try:
        entry = _stages(job, vault, run_dir, model_path, info, emit)
    except RunStopped:
        write_state(run_dir, "stopped")
        raise
    except BaseException as exc:
        write_state(run_dir, "failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    write_state(run_dir, "done", adapter=entry["id"])
    return entry


def _stages(job: Job, vault, run_dir: Path, model_path: Path, info, emit: Emit) -> dict:
    from trainer.base import load_base, pick_device
    from trainer.data import split_examples
    from trainer.sources import load_source
    from trainer.train import TrainSettings, train_adapter

    t0 = time.time()
    # 1. dataset, with its QA report before anything expensive
    report = load_source(job.source, job.path, vault=vault, speaker=job.speaker, target=job.target,
                         persona=job.persona, window=job.window, user=job.user)
    emit("dataset", report=report.render(), **report.summary())
    if len(report.examples) < 4:
        where = job.path or vault.logs_dir
        first = f"; first: {report.rejected[0]}" if report.rejected else ""
        raise DatasetTooSmall(f"{where}: {len(report.examples)} usable examples, at least 4 are needed "
                              f"({len(report.rejected)} lines rejected{first})")
    train_ex, val_ex = split_examples(report.examples, job.val_fraction, seed=job.seed)

    # 2. train (peft + trl) on the dequantized GGUF or --base
    device = pick_device(job.device, job.four_bit)
    emit("phase", name="load", detail=f"loading {info.name} for training on {device.label}")
    base = load_base(model_path, device, job.base)
    settings = TrainSettings(steps=job.steps, epochs=job.epochs if job.steps is None else None, rank=job.rank,
                             alpha=job.alpha or 2.0 * job.rank, batch_size=job.batch_size, lr=job.lr,
                             max_length=job.max_length, val_fraction=job.val_fraction, seed=job.seed)
    result = train_adapter(base, train_ex, val_ex, settings, run_dir, emit=emit, resume=job.resume)
    if result.stopped:
        emit("stopped", step=result.steps_done, total=result.total_steps, run_dir=str(run_dir),
             hint="continue with --resume")
        raise RunStopped(f"stopped at step {result.steps_done}/{result.total_steps}; continue with --resume")

    # 3. convert to a GGUF LoRA for the model the app runs
    from trainer.convert import convert_peft_to_gguf

    gguf_out = run_dir / "adapter.gguf"
    conv = convert_peft_to_gguf(result.adapter_dir, model_path, gguf_out, name=job.adapter_name)
    emit("converted", path=str(gguf_out), tensors=conv.n_tensors, rank=conv.rank, alpha=conv.alpha)

    # 4. verify llama.cpp against transformers + peft, then 5. evaluate on held-out data, with llama.cpp
    from llm.engine import Engine
    from trainer.perplexity import compare
    from trainer.verify import verify_adapter

    probes = [_probe_text(base.tokenizer, ex) for ex in val_ex[:PROBES]]
    with Engine(model_path, n_ctx=max(1024, job.max_length + 64)) as engine:
        ver = verify_adapter(model_path, result.peft_model, gguf_out, base.tokenizer, probes, engine=engine)
        emit("verified", **ver.to_dict())
        if not ver.passed:
            raise VerificationFailed(f"{gguf_out}: conversion check failed: {ver.reason}")
        engine.load_adapter("candidate", gguf_out)
        ppl = compare(engine, val_ex, "candidate")
    emit("eval", stage="heldout", perplexity_base=ppl["base"], perplexity_adapter=ppl["adapter"],
         tokens=ppl["tokens"])

    from trainer.plot import plot_training

    png = plot_training(run_dir / "training.png", result.train_losses, result.val_losses, result.base_val_loss,
                        ppl, f"{job.adapter_name}: {len(train_ex)} train / {len(val_ex)} held-out examples")

    # 6. register: files into the vault, then the manifest entry (under its lock)
    from trainer.register import register_adapter

    training = {"steps": result.steps_done, "device": result.device, "duration_s": round(time.time() - t0, 1),
                "train_loss": result.train_losses[-1][1] if result.train_losses else None,
                "val_loss": result.best_val_loss, "base_val_loss": result.base_val_loss,
                "tokens_per_s": result.tokens_per_s, "peak_memory_bytes": result.peak_memory_bytes,
                "rank": conv.rank, "alpha": conv.alpha, "lr": job.lr, "batch_size": job.batch_size,
                "seed": job.seed, "source": job.source, "run_dir": str(run_dir)}
    reg = register_adapter(
        vault, name=job.adapter_name, gguf=gguf_out, peft_dir=result.adapter_dir,
        extra_files=[png], base={"fingerprint": info.fingerprint, "name": info.name},
        owner=job.user, kind=job.adapter_kind, tasks=job.tasks, tones=job.tones, rank=conv.rank,
        alpha=conv.alpha, dataset={"hash": report.dataset_hash(), "counts": {
            "examples": len(report.examples), "train": len(train_ex), "validation": len(val_ex),
            "rejected": len(report.rejected), "duplicates_removed": report.duplicates_removed}},
        metrics={"perplexity": {"base": ppl["base"], "adapter": ppl["adapter"]},
                 "heldout_tokens": ppl["tokens"]},
        training=training, verification=ver.to_dict(), set_voice=job.adapter_kind == "voice",
    )
    emit("registered", id=reg.id, path=str(reg.path), plot=str(reg.path.parent / png.name))
    return reg.entry


def _probe_text(tokenizer, example) -> str:
    """A validation example as the chat text the adapter will see (prompt + target)."""
    msgs = example.prompt_messages() + [{"role": "assistant", "content": example.target}]
    try:
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses this shape: plain text still probes
        return "\n".join(m["content"] for m in msgs)
