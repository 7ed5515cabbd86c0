"""Run one malformed-input case against the real `home` CLI, in-process, and judge what it did.

Shared by tests/test_malformed_inputs.py (a fast slice) and bench/reliability/malformed.py (the campaign);
the generators are in tests/malformed.py. Each case gets a fresh sandbox:

    <root>/vault/     a seeded vault (config, manifest, one persona card, one gestalt)
    <root>/outside/   the sentinel: files a path trick or a symlink out of the vault could reach
    <root>/cwd/       the working directory while the command runs (a relative write lands here)
    <root>/inputs/    the case's input files

The contract for bad input (ARCHITECTURE.md, "Errors"): no traceback, nothing written outside the vault,
nothing in the vault changed when the input is refused, and exactly one `home: error: …` line on stderr
that names the file (and the line or field where the generator knows it), with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

GOOD_CARD = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
    "name": "Keeper", "description": "Keeps things.", "personality": "calm", "scenario": "", "first_mes": "Hi.",
    "mes_example": "", "tags": ["test"], "alternate_greetings": [], "extensions": {"home": {"hotkey": "f9"}}}}
GOOD_GESTALT = ("---\nid: g-keep\nuser: me\nkind: fact\nsaid: 2026-11-24T10:00:00Z\ncreated: 2026-11-24T10:00:00Z\n"
                "updated: 2026-11-24T10:00:00Z\nsources: []\n---\nThe user keeps bees.\n")
MAX_LINE = 1000  # an error line longer than this echoes the input instead of naming the problem
OUTSIDE_FILES = {"secret.txt": b"do not touch\n", "victim.json": b'{"keep": true}\n'}


@dataclass(frozen=True)
class Link:
    """A symlink to create; `target` may use {root}."""

    target: str


@dataclass
class Case:
    """One generated input. `files`: path under the sandbox root → bytes or a Link; `argv`: the command
    after `home --vault <vault>` ({root} is the sandbox), or `action` for an API entry point; `names`:
    the error line must contain one of them; `must_fail`: the input is certainly invalid."""

    target: str
    kind: str
    files: dict[str, bytes | Link] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    names: tuple[str, ...] = ()
    must_fail: bool = False
    action: Callable[[Path], tuple[int, str]] | None = None

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis' printer: the short form, not every field
        p.text(repr(self))

    def __repr__(self) -> str:  # hypothesis prints failing cases: keep them short and readable
        files = {k: (v if isinstance(v, Link) else v[:120] + (b"..." if len(v) > 120 else b""))
                 for k, v in self.files.items()}
        return f"Case({self.target}/{self.kind}, argv={self.argv}, names={self.names}, files={files})"


@dataclass
class Verdict:
    code: int | None
    stderr: str
    traceback: str | None = None
    escapes: list[str] = field(default_factory=list)  # changed outside the vault
    changed: list[str] = field(default_factory=list)  # vault files changed although the input was refused
    unclear: str | None = None  # why the message breaks the contract
    accepted: bool = False

    @property
    def clean(self) -> bool:
        return not (self.traceback or self.escapes or self.changed or self.unclear)


def seed(root: Path) -> Path:
    """A small real vault and the sentinel folder."""
    from vault.config import default_text
    from vault.fsio import atomic_write_text
    from vault.layout import Vault
    from vault.manifest import ManifestStore, now_iso
    from vault.personas import Persona, normalise_card, save_persona

    for name in ("outside", "cwd", "inputs"):
        (root / name).mkdir(parents=True)
    for name, data in OUTSIDE_FILES.items():
        (root / "outside" / name).write_bytes(data)
    vault = Vault.open(root / "vault")
    # memory off: a case that succeeds (forgetting a gestalt) would otherwise open ChromaDB and the embedder
    atomic_write_text(vault.config_path, default_text("me").replace("[memory]\nenabled = true", "[memory]\nenabled = false", 1))
    save_persona(vault, Persona("keeper", normalise_card(GOOD_CARD, "seed")))
    with ManifestStore(vault).update() as m:
        m.ensure_user("me")
        m.personas["keeper"] = {"id": "keeper", "file": "personas/keeper.json", "imported": now_iso()}
    (vault.gestalts_dir / "me").mkdir(mode=0o700)
    atomic_write_text(vault.gestalts_dir / "me" / "g-keep.md", GOOD_GESTALT)
    return vault.root


def snapshot(root: Path) -> dict[str, str]:
    """path → content hash (or link target) of everything under root, symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            else:
                with open(p, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _ignored(rel: str) -> bool:
    """What a refused command may still touch in the vault: its locks."""
    return rel.startswith("vault/locks/")


def run_cli(argv: list[str], root: Path) -> tuple[int | None, str, str, str | None]:
    """`home --vault <root>/vault *argv` in this process: (exit code, stdout, stderr, traceback)."""
    from home.cli import main

    out, err = io.StringIO(), io.StringIO()
    tb, code = None, None
    old = os.getcwd()
    os.chdir(root / "cwd")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["--vault", str(root / "vault"), *argv])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - a traceback is exactly what we are counting
                tb = traceback.format_exc()
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue(), tb


def run_process(argv: list[str], root: Path) -> tuple[int | None, str, str, str | None]:
    """The same, as a user's shell runs it: `python -m home.cli` in its own process."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "home.cli", "--vault", str(root / "vault"), *argv],
                          cwd=root / "cwd", env=env, capture_output=True, text=True, timeout=300)
    code = proc.returncode if proc.returncode >= 0 else None  # killed by a signal: as bad as a traceback
    crash = None if code is not None else f"killed by signal {-proc.returncode}\n{proc.stderr[-2000:]}"
    return code, proc.stdout, proc.stderr, crash


def run_case(case: Case, keep: Path | None = None, process: bool = False) -> Verdict:
    """`process`: run the command in a subprocess rather than in this interpreter."""
    root = Path(tempfile.mkdtemp(prefix="home-malformed-", dir=keep))
    try:
        seed(root)
        for rel, data in case.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            if isinstance(data, Link):
                path.symlink_to(data.target.format(root=root))
            else:
                path.write_bytes(data)
        before = snapshot(root)
        if case.action is not None:
            code, err, tb = _run_action(case.action, root)
        else:
            argv = [a.format(root=root) for a in case.argv]
            code, _out, err, tb = (run_process if process else run_cli)(argv, root)
        after = snapshot(root)
        return judge(case, code, err, tb, before, after, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_action(action, root: Path) -> tuple[int | None, str, str | None]:
    from home.errors import report_error

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            try:
                code, message = action(root)
            except Exception as exc:  # noqa: BLE001 - known errors become one line, others re-raise
                code, message = report_error(exc), ""
        if message:
            err.write(message + "\n")
        return code, err.getvalue(), None
    except BaseException:  # noqa: BLE001
        return None, err.getvalue(), traceback.format_exc()


def judge(case: Case, code, err: str, tb, before: dict, after: dict, root: Path) -> Verdict:
    v = Verdict(code=code, stderr=err, traceback=tb or (err if "Traceback (most recent call last)" in err else None))
    for rel in sorted(set(before) | set(after)):
        if before.get(rel) == after.get(rel):
            continue
        if not rel.startswith("vault/"):
            v.escapes.append(rel)
        elif code != 0 and not _ignored(rel):
            v.changed.append(rel)
    if v.traceback:
        return v
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("home: warning:")]
    if code == 0:
        v.accepted = True
        if case.must_fail:
            v.unclear = "accepted an input that is certainly invalid"
        return v
    if len(lines) != 1 or not lines[0].startswith("home: error: "):
        v.unclear = f"expected one 'home: error:' line, got {len(lines)}: {[ln[:200] for ln in lines[:3]]}"
    elif len(lines[0]) > MAX_LINE:
        v.unclear = f"the error line is {len(lines[0])} characters: {lines[0][:200]}…"
    elif case.names and not any(n.format(root=root) in lines[0] for n in case.names):
        v.unclear = f"the error does not name any of {case.names}: {lines[0][:300]}"
    return v


@dataclass
class Tally:
    cases: int = 0
    tracebacks: int = 0
    escapes: int = 0
    changed: int = 0
    unclear: int = 0
    accepted: int = 0
    examples: list[str] = field(default_factory=list)
    accepted_kinds: dict[str, int] = field(default_factory=dict)  # which mutations turned out harmless

    def add(self, case: Case, v: Verdict) -> None:
        self.cases += 1
        self.tracebacks += bool(v.traceback)
        self.escapes += bool(v.escapes)
        self.changed += bool(v.changed)
        self.unclear += bool(v.unclear)
        self.accepted += v.accepted
        if v.accepted:
            self.accepted_kinds[case.kind] = self.accepted_kinds.get(case.kind, 0) + 1
        if not v.clean and len(self.examples) < 5:
            why = (v.traceback or "").strip().splitlines()[-1:] or v.escapes or v.changed or [v.unclear]
            self.examples.append(f"{case!r}: {why}")
