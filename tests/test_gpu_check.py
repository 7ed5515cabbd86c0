"""bench/gpu_check.sh --cpu-smoke: every row of the GPU check runs at tiny shapes on the CPU and the table
has them all, so the GPU script (run only where a GPU is lent) cannot rot unnoticed between such runs."""

from __future__ import annotations

import subprocess

import pytest

from tests.cli_helpers import REPO

ROWS = (
    "trainer tok/s, 1B 8x1024",
    "trainer tok/s, 8B 4x1024",
    "8B QLoRA peak GPU memory",
    "home train --4bit, small model",
    "chat decode",
    "long chat, distillations aside",
    "retrain loop",
)


@pytest.mark.slow
def test_cpu_smoke_prints_every_row(tmp_path):
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu-smoke", "--work", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Home GPU check (CPU smoke" in out, out
    header = next(line for line in out.splitlines() if line.startswith("check "))
    for col in ("Home", "reference", "ratio", "goal", "result"):
        assert col in header, header
    table = out[out.index(header):]
    for row in ROWS:
        line = next((ln for ln in table.splitlines() if ln.startswith(row)), None)
        assert line is not None, f"no row {row!r} in:\n{table}"
        assert "FAILED" not in line and "skipped" not in line, line
    e2e = next(ln for ln in table.splitlines() if ln.startswith("home train --4bit"))
    assert "verified, registered" in e2e and "ask used it" in e2e, e2e
    retrain = next(ln for ln in table.splitlines() if ln.startswith("retrain loop"))
    assert "start->registered" in retrain and "registered" in retrain, retrain
