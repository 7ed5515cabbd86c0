"""The cheap kill -9 kinds: `home ask` mid-generation, memory mid-indexing, mid-gestalt distillation and
mid-manifest write. Each sets up a fresh vault, calibrates how long its operation takes by running it to
the end once, then per run starts the real command and kills its process group at a moment drawn from
the kind's random generator (some moments fall after the end: the run completes, and must be whole).

The app and training kinds are in `kinds_heavy.py`.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from vault.layout import Vault
from vault.logs import ConversationLog

from .invariants import Ledger
from .procs import ROOT, Watched, home_argv, home_env

CONFIG = """user = "me"
[generation]
max_tokens = 40
temperature = 0.7
[context]
n_ctx = 1024
[gestalts]
every_n_turns = 2
"""
TOPICS = ["tell me about the sea", "write a short poem about rain", "how do I boil an egg?",
          "what is a good name for a cat?", "describe a quiet morning", "plan a walk in the hills"]
PEOPLE = ["Ana", "Bruno", "Carla", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ines", "Jonas", "Kaito", "Lena"]
PLACES = ["Porto", "Lyon", "Tromso", "Kyoto", "Quito", "Perth", "Oslo", "Cork", "Graz", "Split", "Turku"]
THINGS = ["a red kayak", "an old piano", "a vegetable garden", "a vintage camera", "a grey parrot",
          "a sailing boat", "a pottery wheel", "a telescope"]


@dataclass
class Outcome:
    killed: bool
    at: float  # seconds after start when killed (or when it exited)
    where: str  # what the process had said last
    failure: str | None = None  # exited non-zero without being killed: its last stderr line


def new_vault(root: Path, config: str = CONFIG) -> Vault:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / "config.toml").write_text(config)
    (root / "config.toml").chmod(0o600)
    return Vault.open(root)


def ended(p: Watched, killed: bool) -> Outcome:
    rc = p.proc.returncode
    last = p.lines[-1][1][:60] if p.lines else "(nothing)"
    failure = None
    if not killed and rc != 0:
        errs = p.error_lines()
        failure = f"exit {rc}: {errs[-1] if errs else '(no message)'}"
        if any("Traceback" in e for e in errs):
            failure += " [traceback]"
    return Outcome(killed, p.killed_at if killed else p.elapsed(), last, failure)


class Kind:
    name = ""
    env_extra: dict = {}

    def __init__(self, workdir: Path, seed: int) -> None:
        self.rng = random.Random(seed)
        self.vault = new_vault(workdir / "v")
        self.env = home_env(self.vault.root, **self.env_extra)

    def start(self, *args: str) -> Watched:
        return Watched(home_argv(*args), self.env)

    def calibrate(self, ledger: Ledger) -> None:
        """Run the operation to the end once (setting the durations the kill moments are drawn over)."""

    def run(self, i: int, ledger: Ledger) -> Outcome:
        raise NotImplementedError


class Ask(Kind):
    """`home ask --continue`: 30 % of moments anywhere before the reply streams (start-up, recall, the
    user's words being logged), 70 % while it streams and after (the reply's record, indexing, exit)."""

    name = "ask"

    def _ask(self, text: str, *more: str) -> Watched:
        return self.start("ask", text, "--max-tokens", "40", *more)

    def calibrate(self, ledger: Ledger) -> None:
        p = self._ask("Hello there, this is the first message.")  # the session the runs continue
        p.finish()
        assert p.proc.returncode == 0 and p.first is not None, p.error_lines()
        self.before, self.streaming = p.first, p.elapsed() - p.first
        ledger.answered.append("Hello there, this is the first message.")

    def run(self, i: int, ledger: Ledger) -> Outcome:
        text = f"Run {i}: {self.rng.choice(TOPICS)}"
        early = self.rng.random() < 0.3
        delay = self.rng.uniform(0, self.before if early else 1.25 * self.streaming)
        p = self._ask(text, "--continue")
        if early:
            killed = p.kill_at(delay)
        else:
            p.wait_for(lambda: p.first is not None, 300)
            killed = p.kill_at((p.first or p.elapsed()) + delay)
        if p.first is not None:
            ledger.said.append(text)  # streaming had begun: the user's words were fsynced
        if not killed and p.proc.returncode == 0:
            ledger.answered.append(text)
        return ended(p, killed)


class Index(Kind):
    """`home memory reindex` (catch-up) or `--rebuild` over a few hundred turns; each run first logs a
    new session of 6 turns so the catch-up has work."""

    name = "index"

    def _session(self, n: int, turns: int) -> None:
        log = ConversationLog.create(self.vault, f"index-{n:04d}")
        for t in range(turns):
            log.append({"role": "user" if t % 2 == 0 else "assistant", "user": "me", "persona": "",
                        "text": f"Session {n} turn {t}: a note about {PLACES[(n + t) % len(PLACES)]} and "
                                f"{THINGS[(n * 3 + t) % len(THINGS)]}."})

    def calibrate(self, ledger: Ledger) -> None:
        for n in range(3):
            self._session(n, 20)
        p = self.start("memory", "reindex", "--rebuild")
        p.finish()
        assert p.proc.returncode == 0, p.error_lines()
        self.seconds = p.elapsed()

    def run(self, i: int, ledger: Ledger) -> Outcome:
        self._session(100 + i, 6)
        args = ["memory", "reindex"] + (["--rebuild"] if self.rng.random() < 0.5 else [])
        delay = self.rng.uniform(0, 1.15 * self.seconds)
        p = self.start(*args)
        return ended(p, p.kill_at(delay))


class Distil(Kind):
    """`home gestalts distil` of a fresh session holding two facts (names unique to the run), killed
    anywhere: model load, the greedy calls, the gestalt files being written, memory's sync."""

    name = "distil"

    def _session(self, n: int) -> str:
        sid = f"distil-{n:04d}"
        log = ConversationLog.create(self.vault, sid)
        who, where = PEOPLE[n % len(PEOPLE)], PLACES[(n // len(PEOPLE)) % len(PLACES)]
        thing = THINGS[n % len(THINGS)]
        for text in (f"My friend {who}{n} lives in {where}.", f"I own {thing} called Number{n}."):
            log.append({"role": "user", "user": "me", "persona": "", "text": text})
            log.append({"role": "assistant", "user": "me", "persona": "", "text": "That is good to know."})
        return sid

    def calibrate(self, ledger: Ledger) -> None:
        p = self.start("gestalts", "distil", "--session", self._session(0))
        p.finish()
        assert p.proc.returncode == 0, p.error_lines()
        self.seconds = p.elapsed()

    def run(self, i: int, ledger: Ledger) -> Outcome:
        sid = self._session(i + 1)
        delay = self.rng.uniform(0, 1.15 * self.seconds)
        p = self.start("gestalts", "distil", "--session", sid)
        killed = p.kill_at(delay)
        if not killed and p.proc.returncode == 0:
            for _, line in p.lines:  # "+ g-… kind date text": what it reported written must be there
                m = re.match(r"\+ (g-[0-9a-f]+)\s", line)
                if m:
                    ledger.gestalts.setdefault(m.group(1), None)
        return ended(p, killed)


class ManifestWrites(Kind):
    """`manifest_writer.py` registers (the trainer's registration and `home adapters add`) and removes
    adapters in a loop; killed at a random moment of its loop. A change it reported is durable; the one
    in flight may be either way."""

    name = "manifest"

    def calibrate(self, ledger: Ledger) -> None:
        from llm.models import default_model_path
        from tests.loras import make_random_lora

        self.lora = make_random_lora(default_model_path(), self.vault.root.parent / "lora.gguf", rank=2,
                                     targets=("attn_q",))
        self.window = 4.0

    def run(self, i: int, ledger: Ledger) -> Outcome:
        delay = self.rng.uniform(0, self.window)
        p = Watched([sys.executable, str(ROOT / "bench" / "reliability" / "manifest_writer.py"), str(self.vault.root), str(self.lora),
                     str(i)], self.env)
        p.wait_for(lambda: any(ln == "ready" for _, ln in p.lines), 120)
        start = p.elapsed()
        killed = p.kill_at(start + delay)
        for _, line in p.lines:
            op, _, ident = line.partition(" ")
            if op == "added":
                ledger.added(ident)
            elif op == "removed":
                ledger.dropped(ident)
            elif op == "removing":
                ledger.unsure.add(ident)
        return ended(p, killed)


CHEAP = {k.name: k for k in (Ask, Index, Distil, ManifestWrites)}
