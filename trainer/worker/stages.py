"""The stages every training recipe shares: one adapter trained, converted, verified, measured and
plotted (`train_candidate`), then registered (`register_candidates`); and the run's exceptions.

Both recipes call these: `pipeline` (one adapter, or a two-phase pair) and `per_persona` (one per persona).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.protocol.job import Job
from trainer.protocol.tiers import sized

Emit = Callable[..., dict]
PROBES = 6  # validation examples used as verification probes


def time_split(job: Job) -> bool:
    """Whether the run holds out its *latest* examples (a voice adapter: judged and early-stopped on
    words later than the ones it learned from, as its user meets it) rather than a seeded random share.
    A job's own `split` wins (`home eval --compare` asks for time: both bases held out on the same words)."""
    if job.split is not None:
        return job.split == "time" and not job.per_persona and job.source != "preferences"
    return job.adapter_kind == "voice" and not job.per_persona and job.source != "preferences"


class RunStopped(Exception):
    """SIGINT/SIGTERM stopped training at a step boundary; a checkpoint was saved."""

    exit_code = 130


class DatasetTooSmall(ValueError):
    exit_code = 2


class VerificationFailed(Exception):
    exit_code = 1


@dataclass
class Candidate:
    """One trained, converted and verified adapter waiting to be registered."""

    name: str
    kind: str
    gguf: Path
    peft_dir: Path
    result: Any  # trainer.worker.train.TrainResult
    conv: Any  # trainer.worker.convert.ConvertResult
    ver: Any  # trainer.worker.verify.VerifyResult
    ppl: dict
    png: Path
    n_train: int
    n_val: int


def train_settings(job: Job, n_train: int) -> Any:
    """The trainer's settings for the job (SFT or DPO) on `n_train` training examples: its recipe, the
    learning rate its kind's default when the job names none (`Job.learning_rate`), its length and rank
    the voice tier's when the job names none (trainer/protocol/tiers.py `sized`)."""
    from trainer.worker.train import MODULE_TARGETS, TrainSettings

    size = sized(job, n_train)
    return TrainSettings(steps=size.steps, epochs=size.epochs, rank=size.rank,
                         alpha=job.alpha or 2.0 * size.rank, batch_size=job.batch_size, lr=job.learning_rate,
                         schedule=job.schedule, neftune=job.neftune, targets=MODULE_TARGETS[job.modules],
                         max_length=job.max_length, val_fraction=job.val_fraction, seed=job.seed)


def announce_size(job: Job, n_train: int, emit: Emit) -> Any:
    """The run's settings on `n_train` training examples; when a voice tier chose its length or rank, one
    `plan` phase line says which and what (`home train` and the retrain panel show it)."""
    from trainer.worker.train import total_steps_for

    settings = train_settings(job, n_train)
    size = sized(job, n_train)
    if size.tier is not None:
        total = total_steps_for(n_train, settings)
        emit("phase", name="plan", detail=size.describe(total), tier=size.tier.name, examples=n_train,
             epochs=size.epochs, steps=total, rank=size.rank)
    return settings


def train_candidate(job: Job, base, model_path: Path, train_ex: list, val_ex: list, out_dir: Path, name: str,
             kind: str, emit: Emit, under: Candidate | None = None) -> Candidate:
    """Train → convert → verify → held-out perplexity → plot, for one adapter (nothing registered yet).

    On --resume a phase continues from its checkpoint if it has one and had not finished; a phase that
    finished is trained again from the same seed (same result), one that never started starts."""
    from trainer.worker.train import train_adapter

    settings = train_settings(job, len(train_ex))
    resume = job.resume and any((out_dir / "checkpoints").glob("checkpoint-*")) and not (out_dir / "peft").exists()
    if job.processes > 1:  # --gpus N: N ranks train, the rest happens here once (`base` is then None)
        from trainer.worker.distributed import train_distributed

        result, base = train_distributed(job, model_path, settings, train_ex, val_ex, out_dir, resume, emit)
    else:
        result = train_adapter(base, train_ex, val_ex, settings, out_dir, emit=emit, resume=resume)
    return finish_candidate(job, base, model_path, result, train_ex, val_ex, out_dir, name, kind, emit, under)


def finish_candidate(job: Job, base, model_path: Path, result, train_ex: list, val_ex: list, out_dir: Path,
                     name: str, kind: str, emit: Emit, under: Candidate | None = None) -> Candidate:
    """A trained adapter (SFT or DPO) → convert → verify → held-out perplexity on `val_ex` → plot.
    `under`: what it was trained over (an object with `gguf` and `peft_dir`), applied beneath it."""
    from llm.engine import Engine
    from trainer.evaluation.perplexity import HELDOUT_TOKENS, heldout_perplexity
    from trainer.evaluation.plot import plot_training
    from trainer.worker.convert import convert_peft_to_gguf
    from trainer.worker.verify import verify_adapter

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
    # the context `home eval` reads held-out words with, so the panel's "sounds X% more like you" is its number
    with Engine(model_path, n_ctx=max(HELDOUT_TOKENS, job.max_length + 64)) as engine:
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
        emit("phase", name="heldout", detail="held-out perplexity in llama.cpp, base and adapter, "
             "each reply after the conversation before it")
        ppl = heldout_perplexity(engine, val_ex, "candidate", under=stack)
    emit("eval", stage="heldout", perplexity_base=ppl["base"], perplexity_adapter=ppl["adapter"],
         tokens=ppl["tokens"])
    png = plot_training(out_dir / "training.png", result.train_losses, result.val_losses, result.base_val_loss,
                        ppl, f"{name}: {len(train_ex)} train / {len(val_ex)} held-out examples")
    return Candidate(name, kind, gguf_out, result.adapter_dir, result, conv, ver, ppl, png,
                     len(train_ex), len(val_ex))


def _reference(result, under: Candidate | None = None) -> Any:
    """What verification compares llama.cpp with: the trained model itself when it is a plain fp32 CPU
    model (no second copy); otherwise (4-bit, FlashAttention, bf16 on a GPU) the saved adapter (after the
    adapter it was trained over, two-phase), over which verification loads a clean full-precision model.
    Trained by several processes (--gpus N), only the saved adapter exists here."""
    model = result.peft_model
    if model is not None and next(model.parameters()).device.type == "cpu" and not getattr(model, "is_loaded_in_4bit", False):
        return model
    return [under.peft_dir, result.adapter_dir] if under is not None else result.adapter_dir


def gate_voice(job: Job, vault, info, model_path: Path, cand: Candidate, train_ex: list, val_ex: list,
               emit: Emit, under: Candidate | None = None) -> dict:
    """The promotion gate for a new voice adapter (trainer/evaluation/gate.py): measured against the
    user's current voice on their most recent held-out turns (the run's validation split when it trained
    on the logs, else the newest log turns it never saw). Returns the `promotion` record."""
    from llm.engine import Engine
    from trainer.evaluation.gate import current_voice, judge, recent, stack_of, user_turns
    from vault.manifest import ManifestStore

    manifest = ManifestStore(vault).read()
    old, why = current_voice(vault, manifest, job.user, info.fingerprint)
    if old is None:
        promotion = judge(None, [], None, None, [], why_none=why)
    else:
        emit("phase", name="gate", detail=f"comparing with your current voice {old.id} on recent held-out turns")
        trained = {ex.key() for ex in train_ex}
        turns = recent(val_ex) if job.source == "logs" else user_turns(vault, job.user, job.context_window,
                                                                       trained)
        with Engine(model_path, n_ctx=max(1024, job.max_length + 64)) as engine:
            new_stack = []
            if under is not None:
                engine.load_adapter("under", under.gguf)
                new_stack.append(("under", 1.0))
            engine.load_adapter("candidate", cand.gguf)
            new_stack.append(("candidate", 1.0))
            old_stack = stack_of(vault, manifest, old, "old:")
            for ident, path in old_stack:
                engine.load_adapter(ident, path)
            promotion = judge(engine, new_stack, [(i, 1.0) for i, _ in old_stack], old.id, turns)
    emit("eval", stage="promotion", **promotion)
    return promotion


def register_candidates(job: Job, vault, info, report, candidates: list[Candidate], t0: float, emit: Emit,
              owner: str | None = None, promotion: dict | None = None) -> list[dict]:
    """Files into the vault, then manifest entries (under its lock); a later phase stacks on the earlier.
    `owner`: whose adapter it is (default the user; a per-persona run passes the persona id). `promotion`:
    the gate's record for the last (voice) candidate; a "candidate" decision leaves the user's voice as is."""
    from trainer.protocol.register import register_adapter

    emit("phase", name="register", detail="registering in the vault")

    entries: list[dict] = []
    for i, c in enumerate(candidates):
        r = c.result
        parent = entries[-1]["id"] if entries else None
        size = sized(job, c.n_train)
        training = {"steps": r.steps_done, "device": r.device, "duration_s": round(time.time() - t0, 1),
                    "epochs": size.epochs, "tier": size.tier.name if size.tier else None,  # as resolved
                    "train_loss": r.train_losses[-1][1] if r.train_losses else None,
                    "val_loss": r.best_val_loss, "base_val_loss": r.base_val_loss,
                    "train_losses": r.train_losses, "val_losses": r.val_losses,
                    "tokens_per_s": r.tokens_per_s, "peak_memory_bytes": r.peak_memory_bytes,
                    "lr": job.learning_rate, "schedule": job.schedule, "neftune": job.neftune,
                    "modules": job.modules, "window": job.context_window, "batch_size": job.batch_size,
                    "seed": job.seed, "source": job.source,
                    "phase": (i + 1) if len(candidates) > 1 else None, "run_dir": job.run_dir}
        reg = register_adapter(
            vault, name=c.name, gguf=c.gguf, peft_dir=c.peft_dir, extra_files=[c.png],
            base={"fingerprint": info.fingerprint, "name": info.name}, owner=owner or job.user, kind=c.kind,
            tasks=job.tasks, tones=job.tones, rank=c.conv.rank, alpha=c.conv.alpha,
            dataset={"hash": report.dataset_hash(), "source": job.source,
                     "split": "time" if time_split(job) else "random",
                     # the newest example trained on: in logs that grew since, everything after it is held out
                     "last_trained": report.examples[c.n_train - 1].key() if time_split(job) else None, "counts": {
                "examples": len(report.examples), "train": c.n_train, "validation": c.n_val,
                "rejected": len(report.rejected), "duplicates_removed": report.duplicates_removed}},
            metrics={"perplexity": {"base": c.ppl["base"], "adapter": c.ppl["adapter"]},
                     "heldout_tokens": c.ppl["tokens"]},
            training=training, verification=c.ver.to_dict(), parent=parent,
            stack=[{"id": parent, "scale": 1.0}] if parent else [],
            set_voice=c.kind == "voice" and i == len(candidates) - 1
            and (promotion is None or promotion["decision"] == "promoted"),
            promotion=promotion if i == len(candidates) - 1 else None,
        )
        emit("registered", id=reg.id, path=str(reg.path), plot=str(reg.path.parent / c.png.name),
             stack=[e["id"] for e in entries] + [reg.id], promotion=promotion if i == len(candidates) - 1 else None)
        entries.append(reg.entry)
    return entries


def _probe_text(tokenizer, example) -> str:
    """A validation example as the chat text the adapter will see (prompt + target)."""
    msgs = example.prompt_messages() + [{"role": "assistant", "content": example.target}]
    try:
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses this shape: plain text still probes
        return "\n".join(m["content"] for m in msgs)
