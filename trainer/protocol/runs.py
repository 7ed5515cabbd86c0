"""Run directories under `<vault>/runs/`: what a run was asked (job.json) and where it stands (state.json).

`--resume` needs to find the run that was stopped, with its checkpoint, and the exact job it was
running; a run that crashed (kill -9) is left "running" by a dead pid and is resumable too.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from trainer.protocol.job import Job, JobError
from trainer.protocol.register import slug
from vault.fsio import atomic_write_json, ensure_private_dir
from vault.fsio import pid_alive as _alive
from vault.layout import Vault

RESUMABLE = ("stopped", "running", "failed")


def checkpoint_complete(path: Path) -> bool:
    """transformers writes a checkpoint's files in place and `trainer_state.json` last: a checkpoint
    without a readable one was cut short by a kill and must not be resumed from."""
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """`checkpoint-<step>` folders in `ckpt_dir` that are complete, oldest first."""
    found = [p for p in Path(ckpt_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and p.is_dir()]
    return sorted((p for p in found if checkpoint_complete(p)), key=lambda p: int(p.name.split("-")[-1]))


def read_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_state(run_dir: Path, status: str, **fields) -> None:
    state = {**read_state(run_dir), "status": status, "pid": os.getpid(),
             "updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **fields}
    atomic_write_json(run_dir / "state.json", state)


def new_run(vault: Vault, job: Job) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = vault.runs_dir / f"{slug(job.adapter_name)}-{stamp}-{os.getpid()}"
    ensure_private_dir(run_dir)
    job.run_dir = str(run_dir)
    atomic_write_json(run_dir / "job.json", job.to_dict())
    write_state(run_dir, "running")
    return run_dir


def find_resumable(vault: Vault, job: Job) -> tuple[Path, Job]:
    """The newest run of the same adapter name that stopped or died with a checkpoint, and its job."""
    prefix = slug(job.adapter_name) + "-"
    candidates = sorted((p for p in vault.runs_dir.glob(prefix + "*") if p.is_dir()), reverse=True)
    for run_dir in candidates:
        state = read_state(run_dir)
        if state.get("status") not in RESUMABLE or _alive(state.get("pid")) and state.get("pid") != os.getpid():
            continue
        if not any(complete_checkpoints(d) for d in run_dir.glob("**/checkpoints")):  # phases too (--two-phase)
            continue
        data = json.loads((run_dir / "job.json").read_text())
        old = Job.from_dict(data, str(run_dir / "job.json"))
        old.resume, old.run_dir = True, str(run_dir)
        return run_dir, old
    raise JobError(f"nothing to resume for '{job.adapter_name}' in {vault.runs_dir} "
                   "(no stopped run with a checkpoint)")
