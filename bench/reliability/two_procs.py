"""Two processes at once on one vault, for M minutes: no lost records, no torn manifest, every refusal one
clear line.

    .venv/bin/python bench/reliability/two_procs.py --minutes 10 [--app] [--train] [--seed 1]

Loop A is a conversation: with `--app` the chat app itself in a private tmux server (a message typed, its
reply waited for in the log, again and again; quit with ctrl+q at the end), else `home ask --continue
A_SESSION` again and again. Loop B is
everything else a user runs meanwhile, in turn: `home ask` (a new session, or `--continue` of the
latest, which may be A's), `home memory search/reindex/stats`, `home adapters add/remove/list`,
`home gestalts list`, and with `--train` a 1-step `home train` (under the shared heavy lock, waited for at
most a minute: a busy lock skips that turn, counted, so loop B never stalls behind other trainings). At the end
the invariants of bench/reliability/invariants.py are checked: every turn a command reported done is
in the log once with its reply, every adapter added and not removed is in the manifest (which parses and
names only complete files), memory catches up to the logs, nothing left over. Every command that exited
non-zero must have said why in one `home: …` line and no traceback; the distinct lines are printed.
"""

from __future__ import annotations

import argparse
import fcntl
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.reliability.invariants import Ledger, check  # noqa: E402
from bench.reliability.kinds import TOPICS, new_vault  # noqa: E402
from bench.reliability.kinds_heavy import HEAVY_LOCK  # noqa: E402
from bench.reliability.procs import Watched, home_argv, home_env  # noqa: E402


def try_heavy_lock(timeout: float):
    """The heavy lock's file, held, or None when it stayed busy for `timeout` seconds."""
    fh = open(HEAVY_LOCK, "a")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() > deadline:
                fh.close()
                return None
            time.sleep(0.5)


def answered(vault, text: str) -> bool:
    """The user's `text` is logged and a complete reply follows it in its session."""
    from vault.logs import read_log

    for path in vault.logs_dir.glob("*.jsonl"):
        records = read_log(path).records
        for i, r in enumerate(records):
            if r.get("role") == "user" and r.get("text") == text:
                return any(n.get("role") == "assistant" and not n.get("partial") for n in records[i + 1:])
    return False


class Loops:
    def __init__(self, vault, lora: Path, seed: int, train: bool, train_model: Path | None = None) -> None:
        self.vault, self.lora, self.train = vault, lora, train
        self.train_args = (["--model", str(train_model), "train", "--steps", "8", "--rank", "4", "--lr", "5e-3",
                            "--batch-size", "4", "--max-length", "64"] if train_model else
                           ["train", "--steps", "1", "--rank", "2", "--batch-size", "2", "--max-length", "48"])
        self.env = home_env(vault.root)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.ledger = Ledger()
        self.commands: Counter = Counter()
        self.refusals: Counter = Counter()  # distinct first lines of non-zero exits
        self.unclear: list[str] = []  # non-zero exits without one clear line
        self.notes: Counter = Counter()  # what a command that succeeded said on stderr
        self.added: list[str] = []

    def home(self, name: str, *args: str) -> Watched:
        p = Watched(home_argv(*args), self.env)
        p.finish()
        lines = [ln for ln in p.error_lines() if "Warning" not in ln and not ln.startswith(" ")]
        shown = [re.sub(re.escape(str(self.vault.root)), "VAULT", ln) for ln in lines]
        with self.lock:
            self.commands[name] += 1
            if p.proc.returncode != 0:
                if len(p.error_lines()) == 1 and shown[0].startswith("home: ") and b"Traceback" not in p.stderr:
                    self.refusals[f"{name}: {shown[0]}"] += 1
                else:
                    self.unclear.append(f"{name} exit {p.proc.returncode}: " + " | ".join(p.error_lines()[-3:]))
            else:
                for ln in shown:
                    if ln.startswith("home: "):
                        self.notes[f"{name}: {ln}"] += 1
        return p

    def ask(self, name: str, text: str, *more: str) -> None:
        p = self.home(name, "ask", text, "--max-tokens", "24", *more)
        if p.proc.returncode == 0:
            with self.lock:
                self.ledger.answered.append(text)

    def loop_a(self, session: str, deadline: float) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            self.ask("ask --continue A", f"A{n}: {self.rng.choice(TOPICS)}", "--continue", session)

    def loop_app(self, app, deadline: float) -> None:
        """The chat app in tmux (bench/reliability/kinds_heavy.App's launcher): type, wait for the reply in
        the log, again; ctrl+q at the end and wait for the app to exit (it finishes its indexing first)."""
        t0, pid = app._launch()
        n = 0
        try:
            app._wait(app._ready, pid)
            while time.monotonic() < deadline:
                n += 1
                text = f"A{n}: {self.rng.choice(TOPICS)}"
                app._send(text)
                app._wait(lambda t=text: answered(self.vault, t), pid, timeout=300)
                # The record is logged before the UI leaves its streaming state; Enter typed then is kept in
                # the box ("a reply is still coming", by design). A person waits for the footer's "Stop reply"
                # to go: so does the bench (it typed too early and counted the kept text as lost).
                app._wait(lambda: "Stop reply" not in app.tmux("capture-pane", "-p", "-t", "home", check=False),
                          pid, timeout=120)
                with self.lock:
                    self.commands["app message"] += 1
                    self.ledger.answered.append(text)
        except Exception as exc:  # the app died, froze or showed something else: a failure to report
            with self.lock:
                self.unclear.append(f"app (message {n}): {str(exc)[-400:]}")
        finally:
            if app._alive(pid):  # ctrl+q on every path (a failed wait above used to skip it)
                app.tmux("send-keys", "-t", "home", "C-q", check=False)
                try:
                    app._wait(lambda: not app._alive(pid), pid, timeout=300)
                except RuntimeError:
                    with self.lock:
                        self.unclear.append("app: still running 300 s after ctrl+q")
            app.tmux("kill-server", check=False)

    def loop_b(self, deadline: float) -> None:
        ops = ["ask", "ask --continue", "memory search", "memory reindex", "memory stats", "adapters add",
               "adapters remove", "adapters list", "gestalts list"] + (["train"] if self.train else [])
        n = 0
        while time.monotonic() < deadline:
            op = ops[n % len(ops)]
            n += 1
            if op == "ask":
                self.ask(op, f"B{n}: {self.rng.choice(TOPICS)}")
            elif op == "ask --continue":
                self.ask(op, f"B{n}: {self.rng.choice(TOPICS)}", "--continue")
            elif op == "memory search":
                self.home(op, "memory", "search", "sea")
            elif op == "memory reindex":
                self.home(op, "memory", "reindex")
            elif op == "memory stats":
                self.home(op, "memory", "stats")
            elif op == "adapters add":
                p = self.home(op, "adapters", "add", str(self.lora), "--name", f"b{n}", "--kind", "style")
                m = re.search(r"registered adapter '([^']+)'", "\n".join(ln for _, ln in p.lines))
                if m:
                    with self.lock:
                        self.ledger.added(m.group(1))
                        self.added.append(m.group(1))
            elif op == "adapters remove" and self.added:
                ident = self.added.pop(0)
                if self.home(op, "adapters", "remove", ident).proc.returncode == 0:
                    with self.lock:
                        self.ledger.dropped(ident)
            elif op == "adapters list":
                self.home(op, "adapters", "list")
            elif op == "gestalts list":
                self.home(op, "gestalts", "list")
            elif op == "train":
                held = try_heavy_lock(60)
                if held is None:
                    with self.lock:
                        self.commands["train skipped (heavy lock busy)"] += 1
                    continue
                try:
                    self.home(op, *self.train_args, "--device", "cpu", "--name", "me-voice")
                finally:
                    held.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train", action="store_true", help="loop B trains too (1 step, under the heavy lock)")
    p.add_argument("--tiny-train", action="store_true",
                   help="loop B's training runs on the tiny random-weight Llama of tests/families.py (seconds)")
    p.add_argument("--app", action="store_true", help="loop A is the chat app in tmux, not `home ask --continue`")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    import vault.memory  # noqa: F401  the final check's code, loaded now: a mid-run edit to the tree cannot break it
    from llm.models import default_model_path
    from tests.loras import make_random_lora
    from vault.embedder import load_embedder
    from vault.logs import ConversationLog

    with tempfile.TemporaryDirectory(prefix="home-two-procs-") as tmp:
        work = args.workdir or Path(tmp)
        app = None
        if args.app:
            from bench.reliability.kinds_heavy import App

            app = App(work, args.seed)  # its vault: work/v, the one both loops use
            vault = app.vault
        else:
            vault = new_vault(work / "v")
        lora = make_random_lora(default_model_path(), work / "lora.gguf", rank=2, targets=("attn_q",))
        log = ConversationLog.create(vault, "a-conversation")
        for n in range(6):  # something to train on and to remember
            log.append({"role": "user", "user": "me", "persona": "", "text": f"I like walking by the sea, day {n}."})
            log.append({"role": "assistant", "user": "me", "persona": "", "text": "The sea is lovely."})
        tiny = None
        if args.tiny_train:
            from tests.families import tiny_gguf

            tiny = tiny_gguf("llama")
        loops = Loops(vault, lora, args.seed, args.train, tiny)
        t0 = time.monotonic()
        deadline = t0 + args.minutes * 60
        a = threading.Thread(target=loops.loop_app, args=(app, deadline)) if app else \
            threading.Thread(target=loops.loop_a, args=("a-conversation", deadline))
        a.start()
        loops.loop_b(deadline)
        a.join()
        found = check(vault, loops.ledger, embedder=load_embedder())
        seconds = time.monotonic() - t0
    print(f"{sum(loops.commands.values())} commands in {seconds / 60:.1f} min: "
          + ", ".join(f"{k} {v}" for k, v in sorted(loops.commands.items())))
    print(f"\nrefusals ({sum(loops.refusals.values())}, {len(loops.refusals)} distinct, each one line):")
    for line, n in loops.refusals.most_common():
        print(f"  {n:4d}× {line}")
    if loops.notes:
        print("\nsaid on stderr by commands that succeeded:")
        for line, n in loops.notes.most_common():
            print(f"  {n:4d}× {line}")
    print(f"\nunclear failures: {len(loops.unclear)}")
    for line in loops.unclear[:20]:
        print(f"  {line}")
    print(f"losses: {len(found.losses)}, corruptions: {len(found.corruptions)}, swept: {len(found.cleaned)}")
    for x in found.losses + found.corruptions:
        print(f"  {x}")
    bad = len(found.losses) + len(found.corruptions) + len(loops.unclear)
    import json

    print(json.dumps({"bench": "two_procs", "minutes": round(seconds / 60, 1), "commands": sum(loops.commands.values()),
                      "losses": len(found.losses), "corruptions": len(found.corruptions),
                      "unclear": len(loops.unclear), "refusals": dict(loops.refusals)}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
