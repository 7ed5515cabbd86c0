"""The synthetic vaults the memory benches search and chat in (bench/memory_search.py, bench/turn_overhead.py):
templated user messages and 2–3 sentence replies over two years, the eight facts of
tests/test_vault_memory.py planted in the first session, logs written whole (10k sessions in seconds),
and an embedder that embeds each distinct text once for building large ones."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

SUBJECTS = ["my brother", "my boss", "our neighbour", "the team", "my friend Lea", "the landlord", "my cousin",
            "the kids", "my manager", "our book club", "the plumber", "my mum", "the new intern", "my partner"]
VERBS = ["wants to talk about", "keeps forgetting", "asked me about", "is worried about", "suggested",
         "cancelled", "finally finished", "complained about", "booked", "is excited about", "postponed"]
OBJECTS = ["the quarterly report", "the trip to the coast", "a new laptop", "the garden fence", "the wedding",
           "our budget spreadsheet", "the dentist appointment", "a pottery class", "the car insurance",
           "the birthday party", "the kitchen renovation", "a marathon", "the tax return", "a job interview",
           "the concert tickets", "the broken heater", "a vegetable patch", "the school play", "a podcast"]
WHEN = ["today", "yesterday", "this weekend", "next week", "last month", "tomorrow morning", "in June", "again"]
ASKS = ["How should I handle it?", "Any ideas?", "What would you do?", "Can you help me plan it?", "Thoughts?"]
REPLIES = ["That sounds like a lot to juggle.", "A short list of next steps usually helps.",
           "It might be worth setting a reminder for it.", "Talking it through early avoids surprises.",
           "Break it into two or three small tasks and start with the easiest one.",
           "If it keeps slipping, block a fixed time in your calendar.", "Ask what matters most to them first."]


def synthetic_turns(n: int, rng: random.Random, distinct: int | None = None) -> list[tuple[str, str]]:
    """`distinct`: the user's messages drawn from that many different ones (the replies are ~900 at most)."""
    pool = None
    if distinct:
        pool = list(dict.fromkeys(t for role, t in synthetic_turns(4 * distinct, random.Random(7)) if role == "user"))
        pool = pool[:distinct]
    out = []
    while len(out) < n:
        s, v, o, w = (rng.choice(x) for x in (SUBJECTS, VERBS, OBJECTS, WHEN))
        out.append(("user", rng.choice(pool) if pool else f"{s.capitalize()} {v} {o} {w}. {rng.choice(ASKS)}"))
        out.append(("assistant", f"About {o}: {rng.choice(REPLIES)} {rng.choice(REPLIES)}"))
    return out[:n]


def build_vault(root: Path, n: int, seed: int = 0, per_session: int = 100,
                distinct: int | None = None, days: int = 730,
                start: datetime | None = None) -> tuple[object, dict[str, str]]:
    """A vault with `n` turns in sessions of `per_session`; the planted facts open the first session.
    `distinct`: see synthetic_turns (a 100k vault embeds for hours on the shared 2-core machine; with the
    user's messages drawn from a few thousand, its rows, sessions and words are as many, its embedding
    a fraction: search and turn costs depend on the row count, not on how many texts differ). `days`: the
    span the turns' times cover, from `start` (2025-01-01).
    Each log is written whole, records as ConversationLog.append writes them (a 0600 file, one JSON line
    per turn) but one write and one fsync per file instead of per record: 10k sessions in seconds."""
    import json

    from tests.test_vault_memory import FACTS
    from vault.fsio import FILE_MODE
    from vault.layout import Vault

    vault = Vault.open(root)
    rng = random.Random(seed)
    turns = [t for fact, reply, _ in FACTS for t in (("user", fact), ("assistant", reply))]
    turns += synthetic_turns(n - len(turns), rng, distinct)
    start = start or datetime(2025, 1, 1, tzinfo=UTC)
    facts = {fact: query for fact, _, query in FACTS}
    expected: dict[str, str] = {}
    for first in range(0, len(turns), per_session):
        sid = f"bench-{first // per_session:05d}"
        lines = []
        for turn, (role, text) in enumerate(turns[first:first + per_session], 1):
            when = start + timedelta(minutes=(first + turn - 1) * days * 24 * 60 / n)
            rec = {"v": 1, "id": f"{sid}:{turn}", "session": sid, "turn": turn,
                   "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                   "role": role, "text": text, "user": "me", "persona": "sage"}
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
            if text in facts:
                expected[facts[text]] = rec["id"]
        fd = os.open(vault.logs_dir / f"{sid}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.write(fd, "".join(lines).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    return vault, expected


def log_bytes(vault) -> tuple[int, int]:  # noqa: ANN001
    """(session logs, their bytes) of a vault."""
    sizes = [p.stat().st_size for p in vault.logs_dir.glob("*.jsonl")]
    return len(sizes), sum(sizes)


def planted(vault) -> dict[str, str]:
    """query → the id of the turn that states its fact (the facts open the vault: the first session, or
    the first few when sessions are shorter than the 16 planted turns)."""
    from tests.test_vault_memory import FACTS
    from vault.logs import read_log

    ids: dict[str, str] = {}
    for path in sorted(vault.logs_dir.glob("bench-*.jsonl"))[:16]:
        ids.update((r["text"], r["id"]) for r in read_log(path).records)
    return {query: ids[fact] for fact, _, query in FACTS}


class DistinctTexts:
    """An embedder that embeds each distinct text once (building a bench vault only): the synthetic turns
    are templated, so 100k turns hold ~75k distinct texts, and a text's vector does not depend on what
    else is in its batch. Never used for the ingest rates, which embed every item as Home does."""

    def __init__(self, embedder) -> None:  # noqa: ANN001
        import numpy as np

        self._np, self.inner, self.name, self.dim, self._seen = np, embedder, embedder.name, embedder.dim, {}

    def embed(self, texts):  # noqa: ANN001, ANN201
        new = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if new:
            self._seen.update(zip(new, self.inner.embed(new), strict=True))
        return self._np.stack([self._seen[t] for t in texts]) if texts else self.inner.embed([])
