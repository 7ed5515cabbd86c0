"""One training run, top to bottom: dataset → train → convert → verify → evaluate → register.

Each stage is a function with typed inputs and outputs (see the modules it calls); this file only
sequences them, reports progress as events, and makes sure that a run that stops or fails registers
nothing. Read it as the recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    from vault.orphans import clean_leftovers

    vault = Vault.open(job.vault)
    recovered = clean_leftovers(vault)  # what a killed run or registration left: before anything reads it
    if job.resume:
        run_dir, job = find_resumable(vault, job)
        write_state(run_dir, "running")
    else:
        run_dir = new_run(vault, job)
    model_path = resolve_model(job.model)
    info = read_model_info(model_path)
    emit("started", run_dir=str(run_dir), adapter=job.adapter_name, source=job.source, model=info.name,
         resume=job.resume, recovered=recovered)
    try:
        from trainer.convert import check_architecture

        check_architecture(info.arch, model_path)  # before the dataset, the load and the training
        if job.per_persona:
            from trainer.per_persona import train_each

            entry = train_each(job, vault, run_dir, model_path, info, emit)
        else:
            entry = _stages(job, vault, run_dir, model_path, info, emit)
    except RunStopped:
        write_state(run_dir, "stopped")
        raise
    except BaseException as exc:
        write_state(run_dir, "failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    write_state(run_dir, "done", adapter=entry["id"])
    return entry


@dataclass
class Candidate:
    """One trained, converted and verified adapter waiting to be registered."""

    name: str
    kind: str
    gguf: Path
    peft_dir: Path
    result: Any  # trainer.train.TrainResult
    conv: Any  # trainer.convert.ConvertResult
    ver: Any  # trainer.verify.VerifyResult
    ppl: dict
    png: Path
    n_train: int
    n_val: int


def _stages(job: Job, vault, run_dir: Path, model_path: Path, info, emit: Emit) -> dict:
    from trainer.base import load_base, pick_device
    from trainer.data import split_examples
    from trainer.guard import check_cpu
    from trainer.sources import load_source

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

    device = pick_device(job.device, job.four_bit)
    check_cpu(device.kind, info, report.examples, job.epochs, job.steps, job.batch_size, job.allow_cpu)
    emit("phase", name="load", detail=f"loading {info.name} for training on {device.label}")
    base = load_base(model_path, device, job.base)

    if not job.two_phase:
        only = _adapter(job, base, model_path, train_ex, val_ex, run_dir, job.adapter_name, job.adapter_kind, emit)
        return _register(job, vault, info, report, [only], t0, emit)[-1]

    # --two-phase: 1. identity (who speaks: markers in most examples), 2. style on top of it, frozen.
    # Training phase 2 on the base with phase 1 merged in is the same as training it over the frozen
    # phase-1 adapter (LoRA deltas add up), and llama.cpp then applies the two stacked.
    who = job.persona if job.target == "persona" else job.user
    emit("phase", name="identity", detail=f"phase 1/2: identity adapter ({who})")
    phase1 = _adapter(job, base, model_path, mark_identity(train_ex, who, job.seed),
                      mark_identity(val_ex, who, job.seed), run_dir / "phase1", f"{job.adapter_name}-identity",
                      "persona", emit)
    base.model = phase1.result.peft_model.merge_and_unload()
    emit("phase", name="style", detail="phase 2/2: style adapter on top of the identity adapter")
    phase2 = _adapter(job, base, model_path, train_ex, val_ex, run_dir / "phase2", job.adapter_name,
                      job.adapter_kind, emit, under=phase1)
    return _register(job, vault, info, report, [phase1, phase2], t0, emit)[-1]


def mark_identity(examples: list, who: str, seed: int, share: float = 0.8) -> list:
    """Most examples (seeded choice) get a system line naming the speaker, so phase 1 ties the voice
    to the name; the rest stay unmarked so the identity also shows without the cue."""
    import random
    from dataclasses import replace

    rng = random.Random(seed)
    marker = f"You are {who}. Speak as {who}."
    return [replace(ex, system=f"{marker}\n{ex.system}" if ex.system else marker) if rng.random() < share else ex
            for ex in examples]


def _adapter(job: Job, base, model_path: Path, train_ex: list, val_ex: list, out_dir: Path, name: str,
             kind: str, emit: Emit, under: Candidate | None = None) -> Candidate:
    """Train → convert → verify → held-out perplexity → plot, for one adapter (nothing registered yet).

    On --resume a phase continues from its checkpoint if it has one and had not finished; a phase that
    finished is trained again from the same seed (same result), one that never started starts."""
    from llm.engine import Engine
    from trainer.convert import convert_peft_to_gguf
    from trainer.perplexity import compare
    from trainer.plot import plot_training
    from trainer.train import TrainSettings, train_adapter
    from trainer.verify import verify_adapter

    settings = TrainSettings(steps=job.steps, epochs=job.epochs if job.steps is None else None, rank=job.rank,
                             alpha=job.alpha or 2.0 * job.rank, batch_size=job.batch_size, lr=job.lr,
                             max_length=job.max_length, val_fraction=job.val_fraction, seed=job.seed)
    resume = job.resume and any((out_dir / "checkpoints").glob("checkpoint-*")) and not (out_dir / "peft").exists()
    result = train_adapter(base, train_ex, val_ex, settings, out_dir, emit=emit, resume=resume)
    if result.stopped:
        emit("stopped", step=result.steps_done, total=result.total_steps, run_dir=str(out_dir),
             hint="continue with --resume")
        raise RunStopped(f"stopped at step {result.steps_done}/{result.total_steps}; continue with --resume")

    gguf_out = out_dir / "adapter.gguf"
    emit("phase", name="convert", detail="converting the adapter to GGUF")
    conv = convert_peft_to_gguf(result.adapter_dir, model_path, gguf_out, name=name)
    emit("converted", path=str(gguf_out), tensors=conv.n_tensors, rank=conv.rank, alpha=conv.alpha)

    probes = [_probe_text(base.tokenizer, ex) for ex in val_ex[:PROBES]]
    emit("phase", name="verify", detail="verifying the GGUF adapter in llama.cpp against transformers")
    with Engine(model_path, n_ctx=max(1024, job.max_length + 64)) as engine:
        stack: list[tuple[str, float]] = []
        if under is not None:
            engine.load_adapter("under", under.gguf)
            stack = [("under", 1.0)]
        ver = verify_adapter(model_path, _reference(result, under), gguf_out, base.tokenizer, probes, engine=engine,
                             under=stack)
        emit("verified", **ver.to_dict())
        if not ver.passed:
            raise VerificationFailed(f"{gguf_out}: conversion check failed: {ver.reason}")
        engine.load_adapter("candidate", gguf_out)
        emit("phase", name="heldout", detail="held-out perplexity in llama.cpp, base and adapter")
        ppl = compare(engine, val_ex, "candidate", under=stack)
    emit("eval", stage="heldout", perplexity_base=ppl["base"], perplexity_adapter=ppl["adapter"],
         tokens=ppl["tokens"])
    png = plot_training(out_dir / "training.png", result.train_losses, result.val_losses, result.base_val_loss,
                        ppl, f"{name}: {len(train_ex)} train / {len(val_ex)} held-out examples")
    return Candidate(name, kind, gguf_out, result.adapter_dir, result, conv, ver, ppl, png,
                     len(train_ex), len(val_ex))


def _reference(result, under: Candidate | None = None) -> Any:
    """What verification compares llama.cpp with: the trained model itself when it is a plain fp32 CPU
    model (no second copy); otherwise (4-bit, FlashAttention, bf16 on a GPU) the saved adapter (after the
    adapter it was trained over, two-phase), over which verification loads a clean full-precision model."""
    model = result.peft_model
    if next(model.parameters()).device.type == "cpu" and not getattr(model, "is_loaded_in_4bit", False):
        return model
    return [under.peft_dir, result.adapter_dir] if under is not None else result.adapter_dir


def _register(job: Job, vault, info, report, candidates: list[Candidate], t0: float, emit: Emit,
              owner: str | None = None) -> list[dict]:
    """Files into the vault, then manifest entries (under its lock); a later phase stacks on the earlier.
    `owner`: whose adapter it is (default the user; a per-persona run passes the persona id)."""
    from trainer.register import register_adapter

    emit("phase", name="register", detail="registering in the vault")

    entries: list[dict] = []
    for i, c in enumerate(candidates):
        r = c.result
        parent = entries[-1]["id"] if entries else None
        training = {"steps": r.steps_done, "device": r.device, "duration_s": round(time.time() - t0, 1),
                    "train_loss": r.train_losses[-1][1] if r.train_losses else None,
                    "val_loss": r.best_val_loss, "base_val_loss": r.base_val_loss,
                    "train_losses": r.train_losses, "val_losses": r.val_losses,
                    "tokens_per_s": r.tokens_per_s, "peak_memory_bytes": r.peak_memory_bytes,
                    "lr": job.lr, "batch_size": job.batch_size, "seed": job.seed, "source": job.source,
                    "phase": (i + 1) if len(candidates) > 1 else None, "run_dir": job.run_dir}
        reg = register_adapter(
            vault, name=c.name, gguf=c.gguf, peft_dir=c.peft_dir, extra_files=[c.png],
            base={"fingerprint": info.fingerprint, "name": info.name}, owner=owner or job.user, kind=c.kind,
            tasks=job.tasks, tones=job.tones, rank=c.conv.rank, alpha=c.conv.alpha,
            dataset={"hash": report.dataset_hash(), "source": job.source, "counts": {
                "examples": len(report.examples), "train": c.n_train, "validation": c.n_val,
                "rejected": len(report.rejected), "duplicates_removed": report.duplicates_removed}},
            metrics={"perplexity": {"base": c.ppl["base"], "adapter": c.ppl["adapter"]},
                     "heldout_tokens": c.ppl["tokens"]},
            training=training, verification=c.ver.to_dict(), parent=parent,
            stack=[{"id": parent, "scale": 1.0}] if parent else [],
            set_voice=c.kind == "voice" and i == len(candidates) - 1,
        )
        emit("registered", id=reg.id, path=str(reg.path), plot=str(reg.path.parent / c.png.name),
             stack=[e["id"] for e in entries] + [reg.id])
        entries.append(reg.entry)
    return entries


def _probe_text(tokenizer, example) -> str:
    """A validation example as the chat text the adapter will see (prompt + target)."""
    msgs = example.prompt_messages() + [{"role": "assistant", "content": example.target}]
    try:
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses this shape: plain text still probes
        return "\n".join(m["content"] for m in msgs)
