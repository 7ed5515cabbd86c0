"""The context policy: what of a long chat the model sees when it no longer fits.

Why whole turns, oldest first: a half-dropped exchange confuses small models more than a missing one,
and the system message (persona, memory) is what keeps the reply in character, so it always stays.

Why it drops more than it must, in steps: the engine reuses the KV cache up to the first token that
differs. Dropping the one oldest pair each turn moved the start of the history every turn, so once a chat
outgrew the window every reply re-read the whole window (bench/long_session.py at n_ctx 4096 on SmolLM2:
15.5 s to the first token against 0.44 s on the grid, 9x the prompt tokens read). The cut now moves on a grid of `step` pairs (a power of two, at most half
of what fits), so it stays put, and the prefix cached, for `step` turns in a row; then it jumps and the
window is refilled from at least half full. The grid is counted from the session's first message, so the
same history gives the same cut with no state kept between turns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import ContextError

Message = Mapping[str, Any]


def fit_messages(messages: Sequence[Message], max_tokens: int, n_ctx: int,
                 count_tokens: Callable[[Sequence[Message]], int]) -> tuple[list[Message], int]:
    """Keep the system message and the newest turns so prompt + max_tokens fits n_ctx; drop the
    oldest whole user/assistant pairs first. Returns (messages, number of messages dropped)."""
    msgs = list(messages)
    head = msgs[:1] if msgs and msgs[0].get("role") == "system" else []
    rest = msgs[len(head) :]
    budget = n_ctx - max_tokens
    if not rest:
        n = count_tokens(head)
        if n > budget:
            raise ContextError(
                f"the prompt needs {n} tokens + {max_tokens} for the reply, but the context holds {n_ctx}"
            )
        return msgs, 0
    cuts, i = [0], 0  # start indices of the kept history, oldest first
    while i < len(rest) - 1:
        pair = rest[i].get("role") == "user" and rest[i + 1].get("role") == "assistant"
        i += 2 if pair and i + 1 < len(rest) - 1 else 1
        cuts.append(i)
    fits = lambda k: count_tokens(head + rest[cuts[k] :]) <= budget  # noqa: E731
    if not fits(len(cuts) - 1):
        n = count_tokens(head + rest[-1:])
        raise ContextError(
            f"the system prompt and last message need {n} tokens + {max_tokens} for the reply, "
            f"but the context holds {n_ctx}"
        )
    lo, hi = 0, len(cuts) - 1  # smallest k that fits (token count shrinks as k grows)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    k = cut_on_grid(lo, len(cuts) - 1)
    return head + rest[cuts[k] :], cuts[k]


def cut_on_grid(k: int, last: int) -> int:
    """The cut at or after the smallest fitting one `k` on a grid of `step` cut positions, where `step` is
    the largest power of two not over half of the cuts that fit (`last - k`); 0 when all fits. A later cut
    keeps fewer tokens, so it fits too."""
    if k == 0:
        return 0
    step = 1 << max(0, ((last - k) // 2).bit_length() - 1)
    return min(-(-k // step) * step, last)
