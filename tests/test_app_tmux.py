"""bench/tmux_drive.py drives the real `home` in tmux (type, reply, F3, palette, ctrl+q): kept working in CI."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.cli_helpers import REPO


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_drive_chats_switches_persona_and_quits():
    proc = subprocess.run([sys.executable, "bench/tmux_drive.py", "--timeout", "90"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    out = proc.stdout
    for step in ("started, model loaded", "first reply", "F3: persona Quill", "second reply, by Quill",
                 "command palette", "ctrl+q: exited with status 0"):
        assert f"=== {step} " in out, step
    assert "— persona: Quill" in out and out.rstrip().endswith("tmux_drive: OK")
