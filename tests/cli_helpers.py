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


def assert_private(vault: Path) -> None:
    """Every folder in the vault 0700 and every file 0600, what torch, trl, peft and matplotlib wrote
    included (after a 2-step train, 28 files and 5 folders under runs/<run>/ were readable by others)."""
    loose = []
    for dirpath, dirnames, filenames in os.walk(vault):
        for name, want in [(d, 0o700) for d in dirnames] + [(f, 0o600) for f in filenames]:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode & 0o777
            if mode != want:
                loose.append(f"{os.path.relpath(path, vault)} {oct(mode)}")
    assert not loose, f"{len(loose)} not private: {loose[:20]}"
