"""`home runs clean`: a finished run's checkpoints and weight copies go, what says what it did stays; a
stopped run stays resumable unless --stopped; a live run, reports, logs and adapters are never touched.

The run folders are made by the trainer's own `new_run`/`write_state`, with a real run's files (the
layout a 135M voice run left here) filled with bytes: cleaning depends on the layout, not the weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli_helpers import run_home
from trainer.protocol.job import Job, JobError
from trainer.protocol.runs import find_resumable, new_run, write_state
from vault.layout import Vault

CHECKPOINT = ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin",
              "trainer_state.json", "adapter_config.json", "tokenizer.json", "README.md")
BULK = ["adapter.gguf", "best/adapter_model.safetensors", "best/adapter_config.json", "peft/adapter_model.safetensors",
        "peft/adapter_config.json", "checkpoints/settings.json"] + [
    f"checkpoints/checkpoint-{s}/{f}" for s in (32, 36) for f in CHECKPOINT]
KEPT = ["job.json", "state.json", "training.png"]


def _run(vault: Vault, name: str, status: str, pid: int | None = None):  # noqa: ANN202
    job = Job(vault=str(vault.root), name=name)
    run_dir = new_run(vault, job)
    for rel in BULK:
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text("{}" if rel.endswith(".json") else "x" * 10_000)
    (run_dir / "training.png").write_bytes(b"png")
    write_state(run_dir, status, **({"adapter": f"{name}-1"} if status == "done" else {}))
    if pid is not None:
        state = json.loads((run_dir / "state.json").read_text())
        (run_dir / "state.json").write_text(json.dumps({**state, "pid": pid}))
    return run_dir, job


def _files(root) -> dict[str, bytes]:  # noqa: ANN001
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_clean_frees_finished_runs_only_and_never_touches_logs_adapters_or_live_runs(tmp_path):
    vault = Vault.open(tmp_path / "v")
    (vault.logs_dir / "s1.jsonl").write_text('{"id": "s1:1", "role": "user", "text": "hi"}\n')
    (vault.adapters_dir / "me-voice-1").mkdir()
    (vault.adapters_dir / "me-voice-1" / "adapter.gguf").write_bytes(b"lora")
    (vault.runs_dir / "synth").mkdir()
    (vault.runs_dir / "synth" / "train.jsonl").write_text("{}\n")
    done, _ = _run(vault, "me-voice", "done", pid=2**22 + 7)  # its trainer is gone, as after any run
    stopped, stopped_job = _run(vault, "ana-voice", "stopped", pid=2**22 + 9)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live, _ = _run(vault, "bo-voice", "running", pid=sleeper.pid)
        untouched = {p: _files(p) for p in (vault.logs_dir, vault.adapters_dir, vault.runs_dir / "synth", live)}

        listed = run_home(vault.root, "runs", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {r["run"]: r for r in json.loads(listed.stdout)}
        assert {rows[p.name]["status"] for p in (done, stopped, live)} == {"done", "stopped", "live"}
        assert rows[done.name]["frees"] >= 2 * 4 * 10_000 and rows[live.name]["frees"] == 0
        assert rows["synth"]["status"] == "other" and rows["synth"]["frees"] == 0

        out = run_home(vault.root, "runs", "clean")
        assert out.returncode == 0, out.stderr
        assert done.name in out.stdout and stopped.name not in out.stdout
        assert sorted(_files(done)) == KEPT  # checkpoints, best/, peft/, the GGUF copy: gone
        assert sorted(_files(stopped)) == sorted(BULK + KEPT)
        assert find_resumable(vault, Job(vault=str(vault.root), name="ana-voice"))[0] == stopped

        out = run_home(vault.root, "runs", "clean", "--stopped")
        assert out.returncode == 0, out.stderr
        assert sorted(_files(stopped)) == KEPT
        with pytest.raises(JobError, match="nothing to resume"):
            find_resumable(vault, stopped_job)
        assert {p: _files(p) for p in untouched} == untouched  # logs, adapters, reports, the live run
        again = run_home(vault.root, "runs", "clean", "--stopped")
        assert again.returncode == 0 and "nothing to clean" in again.stdout
    finally:
        sleeper.kill()
        sleeper.wait()
    assert os.path.isdir(vault.runs_dir / "synth")
