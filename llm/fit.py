"""The context policy: what of a long chat the model sees when it no longer fits.

Why whole turns, oldest first: a half-dropped exchange confuses small models more than a missing one,
and the system message (persona, memory) is what keeps the reply in character, so it always stays.
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
    return head + rest[cuts[lo] :], cuts[lo]
