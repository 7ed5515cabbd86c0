"""Hold the one engine for a reply that is not a chat turn (a roundtable turn, a pick-best candidate).

The chat's own turns take `ChatSession.turn_lock` and ask a background distillation to give way
(`distil_cancel`); replies generated elsewhere must do the same, or a distillation call could set its
stack between their `set_adapters` and their first token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def engine_turn(session) -> Iterator[None]:
    session.distil_cancel.set()  # a distillation stops after its current model call (≤ ~1 s)
    with session.turn_lock:
        session.distil_cancel.clear()
        yield
