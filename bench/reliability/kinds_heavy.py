"""The expensive kill -9 kinds: the Textual app driven in tmux, and `home train` at tiny settings.

Each training run takes the shared heavy lock (`/tmp/home-heavy.lock`, fcntl) for itself, so other
trainings on the machine wait for one run, not for the campaign; do not wrap the script in `flock` too.
`train-tiny` (a tiny random-weight Llama GGUF, tests/families.py: seconds per run instead of minutes)
keeps the lock across runs for up to LEASE_S, then lets the others have a turn.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from vault.logs import ConversationLog

from .invariants import Ledger
from .kinds import TOPICS, Kind, Outcome, ended
from .procs import ROOT

HEAVY_LOCK = os.environ.get("HOME_HEAVY_LOCK", "/tmp/home-heavy.lock")


LEASE_S = float(os.environ.get("HOME_HEAVY_LEASE_S", "150"))  # a piece of the campaign: others wait at most this


class Lease:
    """The heavy lock kept across short runs: released once held `seconds`, so others wait at most that."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.fh, self.since = seconds, None, 0.0

    def take(self) -> None:
        if self.fh is not None and time.monotonic() - self.since > self.seconds:
            self.give_back()
            time.sleep(3)  # a waiter's flock returns first
        if self.fh is None:
            self.fh = open(HEAVY_LOCK, "a")
            fcntl.flock(self.fh, fcntl.LOCK_EX)
            self.since = time.monotonic()

    def give_back(self) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


@contextmanager
def heavy_lock():
    with open(HEAVY_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class App(Kind):
    """`home` (the chat app) in a private tmux server: 20 % of moments during start-up (model load, the
    gestalt backlog, memory's catch-up), 80 % after a message is sent (the user's words logged, the reply
    streaming and logged, indexing and the every-N distillation behind it)."""

    name = "app"

    def __init__(self, workdir: Path, seed: int) -> None:
        super().__init__(workdir, seed)
        from bench.tmux_drive import READY, Tmux

        self.ready_text = READY
        self.tmux = Tmux(f"home-kill9-{os.getpid()}")

    def _launch(self) -> tuple[float, int]:
        env = {"HOME_VAULT": str(self.vault.root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "ANONYMIZED_TELEMETRY": "False", "TERM": "xterm-256color", "HOME_CACHE": self.env["HOME_CACHE"]}
        command = f"exec {shlex.quote(sys.executable)} -m home.cli chat --max-tokens 40"
        self.tmux("new-session", "-d", "-s", "home", "-x", "110", "-y", "34", "-c", str(ROOT),
                  *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], command)
        return time.monotonic(), int(self.tmux.pane("#{pane_pid}"))

    def _alive(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    def _ready(self) -> bool:
        screen = self.tmux("capture-pane", "-p", "-t", "home", check=False)
        return self.ready_text in screen and "loading model" not in screen

    def _replies(self) -> int:
        return sum(1 for s in self.vault.logs_dir.glob("*.jsonl") for r in ConversationLog(s, s.stem, 0).records()
                   if r.get("role") == "assistant")

    def _wait(self, cond, pid: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline or not self._alive(pid):
                raise RuntimeError("the app never got there: " + self.tmux.screen()[-600:])
            time.sleep(0.1)

    def _send(self, text: str) -> float:
        self.tmux("send-keys", "-t", "home", "-l", text)
        self.tmux("send-keys", "-t", "home", "Enter")
        return time.monotonic()

    def calibrate(self, ledger: Ledger) -> None:
        t0, pid = self._launch()
        self._wait(self._ready, pid)
        self.startup = time.monotonic() - t0
        sent = self._send("Hello there, this is the first message.")
        self._wait(lambda: self._replies() == 1, pid)
        self.reply = time.monotonic() - sent
        self.tmux("send-keys", "-t", "home", "C-q")
        self._wait(lambda: not self._alive(pid), pid)  # raises only on timeout
        self.tmux("kill-server", check=False)

    def run(self, i: int, ledger: Ledger) -> Outcome:
        early = self.rng.random() < 0.2
        delay = self.rng.uniform(0, self.startup if early else 1.5 * self.reply)
        t0, pid = self._launch()
        where = "start-up"
        try:
            if not early:
                self._wait(self._ready, pid)
                t0 = self._send(f"Run {i}: {self.rng.choice(TOPICS)}")
                where = "message sent"
            while time.monotonic() < t0 + delay and self._alive(pid):
                time.sleep(0.002)
            at = time.monotonic() - t0
            killed = self._alive(pid)
            if killed:
                os.killpg(pid, signal.SIGKILL)
        except (RuntimeError, ProcessLookupError) as exc:
            return Outcome(False, 0.0, where, failure=str(exc)[:300])
        finally:
            # Gone, not only a zombie leader: its other threads (one may sit in fsync) hold its files, and
            # with them the memory lock, until the last one exits and tmux reaps it.
            deadline = time.monotonic() + 60
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.01)
            self.tmux("kill-server", check=False)
        return Outcome(killed, at, where, failure=None if killed else "the app exited by itself")


TRAIN_ARGS = ["train", "--steps", "3", "--rank", "8", "--lr", "1e-2", "--batch-size", "2", "--max-length", "64",
              "--device", "cpu", "--json", "--name", "me-voice"]
VOICE = ["Groceries first, then the bike shop. Keep it simple, yeah?", "A long ride by the river and a nap.",
         "Short and sweet, nobody argued.", "Pasta with whatever greens we have.", "Not yet, tonight after dinner.",
         "Sure, something funny and under two hours.", "Tomatoes are finally red.", "Blue, it goes with everything.",
         "For an hour, then home.", "Yes, I'll bring the van at nine.", "Somewhere by the sea, no planes.",
         "Half twelve at the usual place."]


class Train(Kind):
    """`home train` (3 steps, rank 8, a high learning rate so that conversion's check sees the adapter
    move; CPU, the default model from the cached base), killed with its worker at once anywhere: data, base load, the steps, checkpoints, conversion, verification, the plot,
    registration. A run whose `registered` event was printed must be in the manifest (adopted, if the
    kill came before the manifest write)."""

    name = "train"
    args = TRAIN_ARGS

    def _locked(self):
        return heavy_lock()

    def calibrate(self, ledger: Ledger) -> None:
        log = ConversationLog.create(self.vault, "train-voice")
        for n, text in enumerate(VOICE):
            log.append({"role": "assistant", "user": "me", "persona": "", "text": f"Question {n}?"})
            log.append({"role": "user", "user": "me", "persona": "", "text": text})
        with self._locked():
            p = self.start(*self.args)
            p.finish()
        assert p.proc.returncode == 0, p.error_lines()[-5:]
        self.seconds = p.elapsed()
        self._registered(p, ledger)
        self.phases = [(round(t, 1), json.loads(line).get("phase") or json.loads(line)["event"])
                       for t, line in p.lines if line.startswith("{")]

    def _registered(self, p, ledger: Ledger) -> None:
        for _, line in p.lines:
            if '"registered"' in line:
                ledger.added(json.loads(line)["id"])

    def run(self, i: int, ledger: Ledger) -> Outcome:
        delay = self.rng.uniform(0, 1.1 * self.seconds)
        with self._locked():
            p = self.start(*self.args)
            killed = p.kill_at(delay)
        self._registered(p, ledger)
        out = ended(p, killed)
        events = [json.loads(line) for _, line in p.lines if line.startswith("{")]
        if events:
            out.where = events[-1].get("phase") or events[-1]["event"]
        return out


class TrainTiny(Train):
    """`train` on the tiny random-weight Llama of tests/families.py (2 layers, 64 wide, llama.cpp's own
    converter): the same stages, conversion, verification and registration included, in seconds. 8 steps at
    5e-3 so verification sees the adapter move (as tests/test_families.py)."""

    name = "train-tiny"

    def __init__(self, workdir: Path, seed: int) -> None:
        super().__init__(workdir, seed)
        from tests.families import tiny_gguf

        self.lease = Lease(LEASE_S)
        self.args = ["--model", str(tiny_gguf("llama")), "train", "--steps", "8", "--rank", "4", "--lr", "5e-3",
                     "--batch-size", "4", "--max-length", "64", "--device", "cpu", "--json", "--name", "me-voice"]

    @contextmanager
    def _locked(self):
        self.lease.take()
        yield


HEAVY = {k.name: k for k in (App, Train, TrainTiny)}
