"""Where the knowledge-conflict bench puts the memory block, and the candidate wordings of its first line.

"late" is Home's own `home.prompt.build_messages` (a system message just before the question: the current
rule); "top" the conversation's first system message; "user" inside the user's message.
"""

from __future__ import annotations

HISTORY = [{"role": "user", "content": "Hi! Long day today."},
           {"role": "assistant", "content": "Sorry to hear that. Want to talk about it?"}]
PLACES = ("late", "top", "user")
HEADERS = {  # candidate wordings of the block's first line (the current one is vault.retrieval's)
    "direct": ("Memory — what this user told you, newest last, with dates. These facts are current: answer "
               "questions about the user from them, even where you remember something else."),
    "answer": ("Current facts about the user (from your memory, with dates; they replace anything older you "
               "may remember). Use them to answer."),
}


def with_header(block: str, header: str | None) -> str:
    """The block with its first line replaced (None: as vault.retrieval wrote it)."""
    return block if header is None or not block else header + block[block.index("\n"):]


def messages(question: str, block: str | None, place: str, user: str = "kai") -> list[dict]:
    """The turn's messages (no persona, a short history) with the block where `place` says."""
    from home.prompt import build_messages

    if place not in PLACES:
        raise ValueError(f"place: expected one of {', '.join(PLACES)}, got {place!r}")
    if not block or place == "late":
        return build_messages(None, HISTORY, question, user, block or None)
    if place == "top":
        return [{"role": "system", "content": block}, *HISTORY, {"role": "user", "content": question}]
    return [*HISTORY, {"role": "user", "content": f"{block}\n\n{question}"}]
