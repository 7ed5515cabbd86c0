"""The trainer's rooms and the app's layering, checked from the source and a fresh interpreter.

`home` (and `llm`, `vault`) import only the torch-free rooms (protocol, data, evaluation), lazily too; the worker's two recipes share
`stages` instead of importing each other; `home/app/` never imports `home/commands/`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIGHT = ("trainer.protocol", "trainer.data", "trainer.evaluation")
HEAVY = ("torch", "transformers", "peft", "trl")


def modules(package: str) -> list[str]:
    """Every module of a package, found on disk (so a new file is covered without editing this test)."""
    base = ROOT / package.replace(".", "/")
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in base.rglob("*.py")}
    return sorted(names)


def imported(path: Path) -> set[str]:
    """Absolute module names a file imports (at any depth: lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_app_the_cli_and_the_light_rooms_import_no_torch():
    mods = ["home.cli", "home.app.app", "home.worker"] + [m for pkg in LIGHT for m in modules(pkg)]
    assert len(mods) > 20, mods  # the rooms exist and were found
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            f"print([h for h in {HEAVY!r} if h in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"imported by the light rooms or the app: {out.stdout}"


def test_the_light_rooms_never_import_the_worker():
    allowed = {"trainer.protocol": ("trainer.protocol",),
               "trainer.data": ("trainer.data",),
               "trainer.evaluation": ("trainer.evaluation", "trainer.data")}
    bad = []
    for room, ok in allowed.items():
        for path in (ROOT / room.replace(".", "/")).rglob("*.py"):
            for name in imported(path):
                if name.split(".")[0] == "trainer" and name != "trainer" and not name.startswith(ok):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, bad


def test_home_llm_and_vault_import_only_the_light_rooms():
    """The app and the CLI reach the worker only as a child process (`python -m trainer`), never by import,
    lazy imports inside functions included (the fresh-interpreter check above sees only module level)."""
    bad = [f"{path.relative_to(ROOT)} imports {name}" for pkg in ("home", "llm", "vault")
           for path in (ROOT / pkg).rglob("*.py") for name in imported(path)
           if name.split(".")[0] == "trainer" and not name.startswith(LIGHT)]
    assert not bad, bad


def test_the_two_recipes_do_not_import_each_other():
    worker = ROOT / "trainer" / "worker"
    assert not any(n.startswith("trainer.worker.per_persona") for n in imported(worker / "pipeline.py"))
    assert not any(n.startswith("trainer.worker.pipeline") for n in imported(worker / "per_persona.py"))


def test_the_app_does_not_import_the_commands():
    paths = list((ROOT / "home" / "app").rglob("*.py"))
    assert paths
    bad = [f"{p.relative_to(ROOT)} imports {n}" for p in paths for n in imported(p)
           if n == "home.commands" or n.startswith("home.commands.")]
    assert not bad, bad
