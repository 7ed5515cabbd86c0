"""Shared bits of the bench scripts: import path, arguments, random adapters, percentiles.

The scripts run as `.venv/bin/python bench/<name>.py` from the repo root, where Python puts bench/ (not
the root) on sys.path; the root is added here so `llm` and the tests' random-LoRA writer import as usual.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def parser(description: str, iters: int) -> argparse.ArgumentParser:
    """The arguments every bench takes: --model, --iters, --n-ctx, --threads."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", type=Path, default=None, help="GGUF model (default: the bundled SmolLM2)")
    p.add_argument("--iters", type=int, default=iters, help=f"repetitions (default {iters})")
    p.add_argument("--n-ctx", type=int, default=4096, help="context size, as the app uses (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    return p


def model_path(arg: Path | None) -> Path:
    from llm.models import default_model_path

    return arg if arg is not None else default_model_path()


def random_adapter(model: Path, out: Path, rank: int = 16, seed: int = 0) -> Path:
    """A random LoRA on every linear projection of every layer (the heaviest realistic adapter)."""
    from tests.loras import make_random_lora

    return make_random_lora(model, out, rank=rank, seed=seed)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
