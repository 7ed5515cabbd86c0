"""The command groups of `home` (each registers its subcommand); the argparse types they share."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A count of at least 1 (--max-tokens), refused at parse time: 0 reached the engine's GenParams and
    ended `home ask` in a traceback."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0 (--temperature: 0 is greedy), refused at parse time like `positive_int`."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value
