"""One adapter, top to bottom: dataset → train → convert → verify → evaluate → register; or, with
`--two-phase`, an identity adapter and a style adapter stacked on it. The stages are in `stages`; this
file only sequences them. Read it as the recipe.
"""

from __future__ import annotations

import time
from pathlib import Path

from trainer.protocol.job import Job
from trainer.worker.stages import (
    DatasetTooSmall,
    Emit,
    announce_size,
    gate_voice,
    register_candidates,
    train_candidate,
)


def train_one(job: Job, vault, run_dir: Path, model_path: Path, info, emit: Emit) -> dict:
    """Dataset → one adapter (or the two-phase pair) → registered; returns the last manifest entry."""
    from trainer.data.sources import load_source, source_place
    from trainer.protocol.guard import check_cpu
    from trainer.worker.base import load_base, pick_device
    from trainer.worker.dataset import split_examples
    from trainer.worker.distributed import check_processes
    from trainer.worker.stages import time_split

    t0 = time.time()
    check_processes(job)  # --gpus N on a machine with fewer: one line, before anything is read
    # 1. dataset, with its QA report before anything expensive
    report = load_source(job.source, job.path, vault=vault, speaker=job.speaker, target=job.target,
                         persona=job.persona, window=job.context_window, user=job.user)
    emit("dataset", report=report.render(), **report.summary())
    too_small = report.too_small(source_place(job.source, job.path, vault, job.user))
    if too_small:
        raise DatasetTooSmall(too_small)
    train_ex, val_ex = split_examples(report.examples, job.val_fraction, seed=job.seed, by_time=time_split(job))

    settings = announce_size(job, len(train_ex), emit)  # the voice tier, when it chose the length or rank
    device = pick_device(job.device, job.four_bit)
    check_cpu(device.kind, info, train_ex, settings.epochs, settings.steps, job.batch_size, job.allow_cpu)
    if job.processes > 1:  # each rank loads its own copy (trainer/worker/distributed.py)
        base = None
    else:
        emit("phase", name="load", detail=f"loading {info.name} for training on {device.label}")
        base = load_base(model_path, device, job.base)

    if not job.two_phase:
        only = train_candidate(job, base, model_path, train_ex, val_ex, run_dir, job.adapter_name, job.adapter_kind, emit)
        gate = gate_voice(job, vault, info, model_path, only, train_ex, val_ex, emit) if only.kind == "voice" else None
        return register_candidates(job, vault, info, report, [only], t0, emit, promotion=gate)[-1]

    # --two-phase: 1. identity (who speaks: markers in most examples), 2. style on top of it, frozen.
    # Training phase 2 on the base with phase 1 merged in is the same as training it over the frozen
    # phase-1 adapter (LoRA deltas add up), and llama.cpp then applies the two stacked.
    who = job.persona if job.target == "persona" else job.user
    emit("phase", name="identity", detail=f"phase 1/2: identity adapter ({who})")
    phase1 = train_candidate(job, base, model_path, mark_identity(train_ex, who, job.seed),
                      mark_identity(val_ex, who, job.seed), run_dir / "phase1", f"{job.adapter_name}-identity",
                      "persona", emit)
    base.model = phase1.result.peft_model.merge_and_unload()
    emit("phase", name="style", detail="phase 2/2: style adapter on top of the identity adapter")
    phase2 = train_candidate(job, base, model_path, train_ex, val_ex, run_dir / "phase2", job.adapter_name,
                      job.adapter_kind, emit, under=phase1)
    gate = (gate_voice(job, vault, info, model_path, phase2, train_ex, val_ex, emit, under=phase1)
            if phase2.kind == "voice" else None)
    return register_candidates(job, vault, info, report, [phase1, phase2], t0, emit, promotion=gate)[-1]


def mark_identity(examples: list, who: str, seed: int, share: float = 0.8) -> list:
    """Most examples (seeded choice) get a system line naming the speaker, so phase 1 ties the voice
    to the name; the rest stay unmarked so the identity also shows without the cue."""
    import random
    from dataclasses import replace

    rng = random.Random(seed)
    marker = f"You are {who}. Speak as {who}."
    return [replace(ex, system=f"{marker}\n{ex.system}" if ex.system else marker) if rng.random() < share else ex
            for ex in examples]


