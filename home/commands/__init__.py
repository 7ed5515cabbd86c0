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


def probability(text: str) -> float:
    """A number from 0 to 1 (--top-p), as a persona card's generation.top_p: 5 was passed to llama.cpp."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number >= 0 (--top-k: 0 turns it off), as a persona card's generation.top_k."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (--repeat-penalty: 1 is none), as a persona card's generation.repeat_penalty."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value
