"""Start a `home` process, watch its output with timestamps, and kill -9 it (its whole process group: a
trainer's worker dies at the same instant) at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def home_env(vault: Path, **extra: str) -> dict:
    env = dict(os.environ, HOME_VAULT=str(vault), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               ANONYMIZED_TELEMETRY="False", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    # Training's dequantized base: the tests' cache (already filled), never the user's own.
    env.setdefault("HOME_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "home-tests", "cache"))
    env.update(extra)
    return env


def home_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "home.cli", *args]


class Watched:
    """A child process whose stdout lines (and the time of its first byte) are collected by a thread."""

    def __init__(self, argv: list[str], env: dict) -> None:
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.first: float | None = None  # seconds after start of the first stdout byte
        self.lines: list[tuple[float, str]] = []
        self.stderr = b""
        self.killed_at: float | None = None
        self._out = threading.Thread(target=self._read, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            now = time.monotonic() - self.t0
            if self.first is None:
                self.first = now
            buf += chunk
            *done, buf = buf.split(b"\n")
            self.lines += [(now, ln.decode("utf-8", "replace")) for ln in done]
        if buf:
            self.lines.append((time.monotonic() - self.t0, buf.decode("utf-8", "replace")))

    def _read_err(self) -> None:
        self.stderr = self.proc.stderr.read()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def wait_for(self, cond, timeout: float) -> bool:
        """Poll `cond()` until it holds or the process exits; False on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            if self.proc.poll() is not None:
                return bool(cond())
            time.sleep(0.005)
        return False

    def kill_at(self, at: float, timeout: float = 900) -> bool:
        """kill -9 the group `at` seconds after start unless it exits first. True when it was killed."""
        while self.elapsed() < min(at, timeout):
            if self.proc.poll() is not None:
                self.finish()
                return False
            time.sleep(0.002)
        return self.kill()

    def kill(self) -> bool:
        if self.proc.poll() is not None:
            self.finish()
            return False
        self.killed_at = self.elapsed()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.finish()
        # The whole group gone, not only `home`: a trainer worker still dying keeps its temps "alive" for
        # the next start's sweep (a `.best.tmp-<its pid>` was left for the run after to clean).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
        return True

    def finish(self, timeout: float = 900) -> int:
        rc = self.proc.wait(timeout)
        self._out.join(10)
        self._err.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc

    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
