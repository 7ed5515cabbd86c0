"""What `home runs` lists and cleans: the run folders under `<vault>/runs/`, and the bulk a finished one keeps.

Why: every training leaves its folder — two checkpoints (adapter, optimizer and scheduler state), the best
step's adapter, the final peft adapter and its GGUF: 117 MB for a voice run on the default 135M model, GBs
on an 8B. A voice retrained every week keeps all of it for good, and nothing reads it once the run is
done: `--resume` continues only a stopped, failed or killed run, and a registered adapter has its own
copy under adapters/. Cleaning keeps what says what a run did (job.json, state.json, plots, reports) and
drops the bulk. It never touches a run whose process is alive, a folder that is not a training run
(eval and synth reports, datasets), the logs, adapters/ or anything outside runs/.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from trainer.protocol.runs import RESUMABLE, read_state
from vault.fsio import pid_alive
from vault.layout import Vault

BULK_DIRS = ("checkpoints", "best", "peft")  # a run's own copies of weights and optimizer state
BULK_SUFFIXES = (".gguf", ".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class RunFolder:
    path: Path
    status: str  # done | stopped | failed | running (killed) | live (its process runs) | other (not a run)
    adapter: str | None
    updated: str
    size: int  # bytes, everything in it
    bulk: int  # bytes cleaning would free

    @property
    def cleanable(self) -> bool:
        return self.status != "live" and self.status != "other" and self.bulk > 0


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum((Path(d) / f).lstat().st_size for d, _, files in os.walk(path) for f in files)


def bulk_paths(run_dir: Path) -> list[Path]:
    """The weights and optimizer state in a run folder: `checkpoints/`, `best/`, `peft/` at any depth (a
    per-persona run keeps one set per persona) and loose weight files."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(run_dir):
        here = Path(dirpath)
        found += [here / d for d in dirnames if d in BULK_DIRS]
        dirnames[:] = [d for d in dirnames if d not in BULK_DIRS]
        found += [here / f for f in filenames if f.endswith(BULK_SUFFIXES)]
    return sorted(found)


def _status(state: dict) -> str:
    status = state.get("status")
    if status not in (*RESUMABLE, "done"):
        return "other"
    pid = state.get("pid")
    if status in RESUMABLE and isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
        return "live"
    return str(status)


def scan(vault: Vault) -> list[RunFolder]:
    """Every folder under runs/, oldest first (by name: `<name>-<time>-<pid>`), with what it holds."""
    out = []
    if not vault.runs_dir.is_dir():
        return out
    for path in sorted(p for p in vault.runs_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        state = read_state(path) if (path / "state.json").is_file() else {}
        status = _status(state) if state else "other"
        bulk = sum(_size(p) for p in bulk_paths(path)) if status not in ("live", "other") else 0
        adapter = state.get("adapter") if isinstance(state.get("adapter"), str) else None
        out.append(RunFolder(path, status, adapter, str(state.get("updated", "")), _size(path), bulk))
    return out


def clean(vault: Vault, stopped: bool = False, dry_run: bool = False) -> list[RunFolder]:
    """Drop the bulk of every finished run (and, with `stopped`, of the runs `--resume` could continue:
    they can then no longer be resumed). Returns the folders cleaned (or that would be, `dry_run`)."""
    done = []
    for run in scan(vault):
        if not run.cleanable or (run.status != "done" and not stopped):
            continue
        if not dry_run:
            again = _status(read_state(run.path))  # a resume may have started since the scan
            if again == "live":
                continue
            for p in bulk_paths(run.path):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        done.append(run)
    return done
