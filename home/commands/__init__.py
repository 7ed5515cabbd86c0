"""The command groups of `home` (each registers its subcommand); the argparse types they share."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def bounded(convert: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: `convert(text)`, refused at parse time (exit 2, one line) unless `ok` holds.
    Values a persona card would refuse (0 tokens, top-p 5) reached GenParams or llama.cpp and ended in a
    traceback or a silent clamp."""

    def parse(text: str):  # noqa: ANN202
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):  # `not ok` catches NaN too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = bounded(int, lambda v: v >= 1, "a whole number >= 1")  # --max-tokens
non_negative_float = bounded(float, lambda v: v >= 0, "a number >= 0")  # --temperature: 0 is greedy
probability = bounded(float, lambda v: 0 <= v <= 1, "a number between 0 and 1")  # --top-p
count = bounded(int, lambda v: v >= 0, "a whole number >= 0")  # --top-k: 0 turns it off
positive_float = bounded(float, lambda v: v > 0, "a number > 0")  # --repeat-penalty: 1 is none
