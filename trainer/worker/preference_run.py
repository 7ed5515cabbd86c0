"""The preference recipe (`home train --method dpo --source preferences`): pick-best pairs → DPO over the
user's current voice adapter (or the base) → convert → verify → preference accuracy before/after on
held-out pairs → the promotion gate → registered as the voice's next version (active, or a candidate).

Read it as the recipe; the stages are shared with SFT (`stages.finish_candidate`), the DPO loop is
`dpo`, the pairs are `trainer.data.preferences`, the measurements `trainer.evaluation.preference/gate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from trainer.protocol.job import VOICE_WINDOW, Job
from trainer.worker.stages import DatasetTooSmall, Emit, finish_candidate, train_settings


@dataclass(frozen=True)
class Start:
    """Where DPO starts: the voice entry (None: the base), its peft folder, and an adapter beneath it."""

    entry: object | None
    peft_dir: Path | None
    under: object | None  # an entry whose weights are merged into the base first (a two-phase voice)
    note: str


@dataclass(frozen=True)
class Under:
    """What `finish_candidate` applies beneath the new adapter: the GGUF and the peft folder."""

    gguf: Path
    peft_dir: Path


def starting_point(vault, manifest, job: Job, info) -> Start:
    """The voice adapter named by the job (or the user's active one) when its peft weights are in the
    vault; else the base, with the reason (an imported GGUF has no trainable weights)."""
    from trainer.evaluation.gate import current_voice

    if job.start:
        entry = manifest.adapters.get(job.start)
        if entry is None:
            return Start(None, None, None, f"adapter {job.start} no longer exists: starting from the base")
    else:
        entry, why = current_voice(vault, manifest, job.user, info.fingerprint)
        if entry is None:
            return Start(None, None, None, f"{why}: starting from the base")
    root = Path(vault.root)
    peft = (root / entry.file).parent / "peft"
    if not (peft / "adapter_config.json").is_file():
        return Start(None, None, None, f"{entry.id} has no peft weights (imported GGUF): starting from the base")
    under = None
    if entry.stack:
        if len(entry.stack) > 1:
            return Start(None, None, None, f"{entry.id} stacks {len(entry.stack)} adapters: starting from the base")
        under = manifest.adapters.get(entry.stack[0]["id"])
        if under is None or not ((root / under.file).parent / "peft" / "adapter_config.json").is_file():
            return Start(None, None, None, f"{entry.id}'s lower adapter has no peft weights: starting from the base")
    return Start(entry, peft, under, f"starting from your voice {entry.id} (the reference)")


def train_preferences(job: Job, vault, run_dir: Path, model_path: Path, info, emit: Emit) -> dict:
    """Pairs → DPO adapter → registered (returns its manifest entry)."""
    from llm.engine import Engine
    from trainer.data.preferences import load_pairs, split_pairs
    from trainer.evaluation.gate import judge, stack_of, user_turns
    from trainer.evaluation.preference import before_after
    from trainer.protocol.guard import check_cpu
    from trainer.worker.base import load_base, pick_device
    from trainer.worker.dpo import train_dpo
    from vault.manifest import ManifestStore

    t0 = time.time()
    manifest = ManifestStore(vault).read()
    # 1. the pairs, with the QA report (kept / skipped and why) before anything expensive
    report = load_pairs(vault, job.user, info.fingerprint, set(manifest.adapters))
    emit("dataset", report=report.render(), **report.summary())
    try:
        train_p, val_p = split_pairs(report.pairs, max(job.val_fraction, 0.2), seed=job.seed)
    except ValueError as exc:
        raise DatasetTooSmall(f"{report.file}: {exc} ({len(report.skipped)} skipped)") from None
    start = starting_point(vault, manifest, job, info)
    emit("phase", name="start", detail=start.note)
    val_ex = [_chosen_example(p) for p in val_p]

    device = pick_device(job.device, job.four_bit)
    check_cpu(device.kind, info, [_chosen_example(p) for p in train_p], job.epochs, job.steps, job.batch_size,
              job.allow_cpu)
    emit("phase", name="load", detail=f"loading {info.name} for preference training on {device.label}")
    base = load_base(model_path, device, job.base)
    under = None
    if start.under is not None:  # a two-phase voice: its lower adapter merged in, the voice trained on top
        from peft import PeftModel

        lower = (Path(vault.root) / start.under.file).parent
        base.model = PeftModel.from_pretrained(base.model, str(lower / "peft")).merge_and_unload()
        under = Under(lower / "adapter.gguf", lower / "peft")

    # 2. DPO, then the shared stages: convert, verify, held-out perplexity of the chosen replies, plot
    settings = train_settings(job, len(train_p))
    resume = job.resume and any((run_dir / "checkpoints").glob("checkpoint-*")) and not (run_dir / "peft").exists()
    result = train_dpo(base, train_p, val_p, settings, run_dir, start=start.peft_dir, beta=job.beta, emit=emit,
                       resume=resume)
    name = start.entry.name if start.entry is not None and not job.name else job.adapter_name
    cand = finish_candidate(job, base, model_path, result, [_chosen_example(p) for p in train_p], val_ex, run_dir, name, "voice", emit, under)

    # 3. preference accuracy before/after on the held-out pairs, and the promotion gate
    emit("phase", name="preference", detail=f"preference accuracy on {len(val_p)} held-out pairs, before and after")
    manifest = ManifestStore(vault).read()
    with Engine(model_path, n_ctx=max(1024, job.max_length + 64)) as engine:
        loaded: set[str] = set()

        def load(pairs: list[tuple[str, Path]]) -> list[tuple[str, float]]:
            for ident, path in pairs:
                if ident not in loaded:
                    engine.load_adapter(ident, path)
                    loaded.add(ident)
            return [(ident, 1.0) for ident, _ in pairs]

        below = load([("under", under.gguf)]) if under is not None else []
        new_stack = below + load([("candidate", cand.gguf)])
        start_stack = load(stack_of(vault, manifest, start.entry, "old:")) if start.entry is not None else []
        pref = before_after(engine, val_p, start_stack, new_stack, beta=job.beta)
        emit("eval", stage="preference", **{f"{k}_{side}": v for side in ("before", "after")
                                            for k, v in pref[side].items() if k != "pairs"}, pairs=len(val_p))
        old = _replaced(vault, manifest, job, info)
        old_stack = load(stack_of(vault, manifest, old, "old:")) if old is not None else None
        promotion = judge(engine, new_stack, old_stack, old.id if old else None, user_turns(vault, job.user, VOICE_WINDOW),
                          val_p, why_none="no voice adapter to replace", beta=job.beta)
    emit("eval", stage="promotion", **promotion)
    return _register(job, vault, info, report, cand, start, pref, promotion, len(train_p), val_p, t0, emit)


def _replaced(vault, manifest, job: Job, info):
    from trainer.evaluation.gate import current_voice

    return current_voice(vault, manifest, job.user, info.fingerprint)[0]


def _chosen_example(pair):
    """A pair's chosen reply as an Example: verification probes and held-out perplexity use it."""
    from trainer.data.examples import Example

    system = next((m["content"] for m in pair.prompt if m["role"] == "system"), None)
    ctx = tuple(m for m in pair.prompt if m["role"] != "system")
    return Example(context=ctx, target=pair.chosen, source="preferences", origin=pair.id, system=system)


def _register(job: Job, vault, info, report, c, start: Start, pref: dict, promotion: dict, n_train: int,
              val_p: list, t0: float, emit: Emit) -> dict:
    from trainer.protocol.register import register_adapter

    emit("phase", name="register", detail="registering in the vault")
    r = c.result
    parent = start.entry.stack[0]["id"] if start.entry is not None and start.entry.stack else None
    reg = register_adapter(
        vault, name=c.name, gguf=c.gguf, peft_dir=c.peft_dir, extra_files=[c.png],
        base={"fingerprint": info.fingerprint, "name": info.name}, owner=job.user, kind="voice",
        tasks=job.tasks or (list(start.entry.tasks) if start.entry is not None else []),
        tones=job.tones or (list(start.entry.tones) if start.entry is not None else []),
        rank=c.conv.rank, alpha=c.conv.alpha,
        dataset={"hash": report.dataset_hash(), "source": "preferences", "counts": {
            "pairs": len(report.pairs), "train": n_train, "validation": len(val_p), "skipped": len(report.skipped),
            "skipped_by_reason": report.counts()}, "heldout_ids": [p.id for p in val_p]},
        metrics={"perplexity": {"base": c.ppl["base"], "adapter": c.ppl["adapter"]},
                 "heldout_tokens": c.ppl["tokens"], "preference": pref},
        training={"method": "dpo", "beta": job.beta, "start": start.entry.id if start.entry is not None else None,
                  "steps": r.steps_done, "device": r.device, "duration_s": round(time.time() - t0, 1),
                  "train_loss": r.train_losses[-1][1] if r.train_losses else None, "val_loss": r.best_val_loss,
                  "base_val_loss": r.base_val_loss, "train_losses": r.train_losses, "val_losses": r.val_losses,
                  "tokens_per_s": r.tokens_per_s, "peak_memory_bytes": r.peak_memory_bytes, "lr": job.learning_rate,
                  "schedule": job.schedule, "neftune": job.neftune, "modules": job.modules,
                  "batch_size": job.batch_size, "seed": job.seed, "source": "preferences", "run_dir": job.run_dir},
        verification=c.ver.to_dict(), parent=parent,
        stack=[{"id": parent, "scale": 1.0}] if parent else [],
        set_voice=promotion["decision"] == "promoted", promotion=promotion,
    )
    emit("registered", id=reg.id, path=str(reg.path), plot=str(reg.path.parent / c.png.name), stack=[reg.id],
         promotion=promotion)
    return reg.entry
