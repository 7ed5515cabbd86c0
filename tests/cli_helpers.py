"""Run the real `home` CLI in a subprocess, the way a user's shell does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def home_env(vault: Path) -> dict:
    env = dict(os.environ)
    env.update(HOME_VAULT=str(vault), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def run_home(vault: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "home.cli", *args],
        cwd=REPO, env=home_env(vault), capture_output=True, text=True, timeout=timeout,
    )


def popen_home(vault: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "home.cli", *args],
        cwd=REPO, env=home_env(vault), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's contract for bad input: exactly one line on stderr, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("home: error: "), lines[0]
    return lines[0]
