"""A persona's lore (its character sheet) in long-term memory, so retrieval can find what the sheet says.

Why through `MemoryStore.upsert` and not a conversation log: lore is not something anyone said, so it
must not reach the trainer's log source; but it should be found by the same hybrid search as the turns.
Each sheet section is one memory item with a stable id (`lore-<persona>:<n>`, in the shape the store
expects of log ids), so indexing a sheet again replaces its items instead of adding copies, and items of
sections the sheet no longer has are deleted. Items carry `persona` = the persona id, `role` assistant
(the persona's own words about itself) and `user` = the user who made the persona: the turn path searches
memory per user, so that is who finds it. `home memory reindex --rebuild` empties the store:
run `home personas from-sheets` again afterwards to put the lore back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .sheets import Sheet

MAX_CHARS = 1500  # one item per ~paragraph group: MiniLM reads 256 tokens, longer text is cut


def lore_session(persona_id: str) -> str:
    return f"lore-{persona_id}"


def lore_records(persona_id: str, sheet: Sheet, user: str = "") -> list[dict]:
    """One record per section (long sections split at paragraphs), each prefixed with who and what."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    session = lore_session(persona_id)
    texts: list[str] = []
    for section in sheet.sections:
        if not section.text:
            continue
        title = "summary" if section.key == "summary" else section.title
        for chunk in _chunks(section.text):
            texts.append(f"{sheet.name} ({title}): {chunk}")
    return [{"id": f"{session}:{n}", "session": session, "turn": n, "role": "assistant", "text": text,
             "user": user, "persona": persona_id, "time": now} for n, text in enumerate(texts, 1)]


def _chunks(text: str) -> list[str]:
    out: list[str] = []
    for para in text.split("\n\n"):
        para = para.strip()
        if out and len(out[-1]) + len(para) + 2 <= MAX_CHARS:
            out[-1] += "\n\n" + para
        elif para:
            out.append(para)
    return out


def index_lore(store, persona_id: str, sheet: Sheet, previous_ids: list[str], user: str = "") -> list[str]:
    """Put the sheet's lore in `store` (an open MemoryStore); returns the ids now indexed.

    Ids that an earlier version of the sheet had and this one has not are deleted."""
    records = lore_records(persona_id, sheet, user)
    store.upsert(records)
    ids = [r["id"] for r in records]
    stale = [i for i in previous_ids if i not in set(ids)]
    if stale:
        store.delete(stale)
    return ids
