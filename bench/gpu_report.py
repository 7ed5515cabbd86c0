"""The GPU check's plumbing that is not a measurement: the table it prints, the versions it ran with,
and killing a `home train` process tree that ran past the deadline."""

from __future__ import annotations

import os
from typing import Any


def kill_tree(pid: int) -> None:
    """`home train` and its worker: the worker runs in a session of its own (so a terminal's Ctrl-C reaches
    only `home`), so killing `home` alone would leave it training. Children first, by pid (/proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        children = []
    for child in children:
        kill_tree(child)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def table(run: Any) -> str:
    cols = ("check", "home", "ref", "ratio", "goal", "result")
    heads = ("check", "Home", "reference", "ratio", "goal", "result")
    widths = [max(len(h), *(len(str(r.get(c, ""))) for r in run.rows)) for c, h in zip(cols, heads, strict=True)]
    line = lambda vals: " | ".join(str(v).ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(heads), "-+-".join("-" * w for w in widths)]
    for r in run.rows:
        out.append(line([r.get(c, "") for c in cols]))
        if r.get("detail"):
            out.append(f"    {r['detail']}")
    return "\n".join(out)


def environment() -> str:
    import importlib.metadata as md

    def v(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "-"

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    names = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "liger-kernel", "llama_cpp_python")
    return f"{gpu}; " + ", ".join(f"{n} {v(n)}" for n in names)
