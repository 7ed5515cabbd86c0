"""Stop strings in a streamed reply: emit text as soon as it cannot be the start of a stop marker."""

from __future__ import annotations


def split_stop(text: str, stops: tuple[str, ...], longest: int) -> tuple[str, str, bool]:
    """(text safe to emit, text held back, whether a stop string was hit). Held back: the longest
    tail that could still grow into a stop string, so no part of a stop marker is ever emitted."""
    if not stops:
        return text, "", False
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        return text[:cut], "", True
    for k in range(min(longest - 1, len(text)), 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return text[:-k], tail, False
    return text, "", False
