"""Drive the real `home` app in tmux as a person would, printing the screen after each step.

Starts `python -m home.cli` in a detached tmux session (a private tmux server, so nothing of the user's
is touched) on a temporary vault with the default model, then: wait for the prompt, type a message,
wait for the reply, press F3 (Quill), chat again, open the palette (ctrl+p), close it, quit (ctrl+q).
Each step waits for a text to appear on the screen (tmux capture-pane); if it never does, the last
screen is printed and the script exits 1. At the end the vault's log must hold the four turns, the
second reply by Quill, and the app must have exited 0.

    .venv/bin/python bench/tmux_drive.py [--timeout 120] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 110, 34
READY = "Message (Enter sends, ctrl+j new line)"
CONFIG = """user = "me"
[generation]
max_tokens = 12
temperature = 0.0
seed = 1
[context]
n_ctx = 1024
"""


class Failed(Exception):
    """An expected screen never appeared: the script prints what it saw and exits 1."""


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=30)
        if check and proc.returncode != 0:
            raise Failed(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "home")

    def pane(self, fmt: str) -> str:
        return self("display-message", "-p", "-t", "home", fmt).strip()


def show(step: str, screen: str) -> None:
    print(f"\n=== {step} " + "=" * max(0, WIDTH - len(step) - 5))
    print(screen.rstrip("\n"))
    sys.stdout.flush()


def wait_screen(tmux: Tmux, step: str, cond, timeout: float) -> str:
    """Poll capture-pane until `cond(screen)`; print the screen either way."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        if tmux.pane("#{pane_dead}") == "1":
            show(f"{step}: the app exited early", screen or tmux.screen())
            raise Failed(f"{step}: the app exited early")
        screen = tmux.screen()
        if cond(screen):
            show(step, screen)
            return screen
        time.sleep(0.2)
    show(f"{step}: NOT FOUND after {timeout:g} s", screen)
    raise Failed(f"{step}: the expected text never appeared")


def has(*texts: str):
    return lambda screen: all(t in screen for t in texts)


def log_records(vault: Path) -> list[dict]:
    out = []
    for f in sorted((vault / "logs").glob("*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def drive(vault: Path, tmux: Tmux, timeout: float) -> None:
    env = {"HOME_VAULT": str(vault), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "ANONYMIZED_TELEMETRY": "False", "TERM": "xterm-256color"}
    status_file = vault.parent / "status"
    # The shell records the exit status itself: tmux's pane_dead_status is sometimes left empty.
    # (stderr stays on the terminal: Textual draws there.)
    command = (f"sleep 0.3; {shlex.quote(sys.executable)} -m home.cli chat --max-tokens 12; "
               f"echo $? > {shlex.quote(str(status_file))}")
    tmux("new-session", "-d", "-s", "home", "-x", str(WIDTH), "-y", str(HEIGHT), "-c", str(ROOT),
         *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], command)
    tmux("set-option", "-t", "home", "remain-on-exit", "on")
    wait_screen(tmux, "started, model loaded", lambda s: READY in s and "loading model" not in s, timeout)

    tmux("send-keys", "-t", "home", "-l", "Hello there")
    tmux("send-keys", "-t", "home", "Enter")
    wait_screen(tmux, "first reply", lambda s: "─ home ─" in s and re.search(r"\d+ tok/s", s)
                and len([r for r in log_records(vault) if r["role"] == "assistant"]) == 1, timeout)

    tmux("send-keys", "-t", "home", "F3")
    wait_screen(tmux, "F3: persona Quill", has("persona: Quill", "persona Quill"), timeout)

    tmux("send-keys", "-t", "home", "-l", "Tighten: me and him goes to the shop.")
    tmux("send-keys", "-t", "home", "Enter")
    wait_screen(tmux, "second reply, by Quill", lambda s: "─ Quill ─" in s
                and len([r for r in log_records(vault) if r["role"] == "assistant"]) == 2, timeout)

    tmux("send-keys", "-t", "home", "C-p")
    wait_screen(tmux, "command palette", has("Search for commands", "New session", "Retrain my voice"), timeout)
    tmux("send-keys", "-t", "home", "Escape")
    wait_screen(tmux, "palette closed", lambda s: "Search for commands" not in s and READY in s, timeout)

    tmux("send-keys", "-t", "home", "C-q")
    deadline = time.monotonic() + timeout
    while not status_file.exists() or not status_file.read_text().strip():
        if time.monotonic() > deadline:
            show("ctrl+q: still running", tmux.screen())
            raise Failed("ctrl+q: the app did not exit")
        time.sleep(0.2)
    status = status_file.read_text().strip()
    show(f"ctrl+q: exited with status {status}", tmux.screen())
    if status != "0":
        raise Failed(f"the app exited with status {status}")

    recs = log_records(vault)
    roles = [(r["role"], r.get("persona")) for r in recs]
    if roles != [("user", None), ("assistant", None), ("user", "quill"), ("assistant", "quill")]:
        raise Failed(f"the log does not hold the four turns as expected: {roles}")
    print(f"\nlog: {len(recs)} records, replies: {[r['text'] for r in recs if r['role'] == 'assistant']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=120.0, help="seconds each step may take (default 120)")
    p.add_argument("--keep", action="store_true", help="keep the temporary vault (its path is printed)")
    args = p.parse_args()
    if shutil.which("tmux") is None:
        print("tmux_drive: tmux is not installed", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="home-tmux-"))
    vault = tmp / "vault"
    vault.mkdir(mode=0o700)
    (vault / "config.toml").write_text(CONFIG)
    tmux = Tmux(f"home-drive-{os.getpid()}")
    try:
        drive(vault, tmux, args.timeout)
    except Failed as exc:
        print(f"tmux_drive: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        tmux("kill-server", check=False)
        if args.keep:
            print(f"vault kept at {vault}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("tmux_drive: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
