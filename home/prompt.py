"""Build the chat messages for one turn from a persona card, memory, and the session's history.

Small models follow short system prompts best, so only the card fields that describe *how to speak*
go in; `{{char}}` and `{{user}}` are substituted as card authors expect.
"""

from __future__ import annotations

import re

from vault.personas import Persona

_MACRO = re.compile(r"\{\{\s*(char|user)\s*\}\}", re.IGNORECASE)


def fill(text: str, char: str, user: str) -> str:
    return _MACRO.sub(lambda m: char if m.group(1).lower() == "char" else user, text or "").strip()


def system_prompt(persona: Persona | None, user: str) -> str | None:
    parts: list[str] = []
    if persona is not None:
        data = persona.data
        name = data.get("name") or persona.id
        for key in ("system_prompt", "description", "personality", "scenario"):
            value = fill(data.get(key) or "", name, user)
            if value:
                parts.append(value if key == "system_prompt" else f"{key.capitalize()}: {value}")
        post = fill(data.get("post_history_instructions") or "", name, user)
        if post:
            parts.append(post)
    return "\n\n".join(parts) or None


def build_messages(
    persona: Persona | None,
    history: list[dict],
    user_text: str,
    user: str,
    memory_block: str | None = None,
) -> list[dict]:
    """System (persona) → prior turns → this turn's memory block (a system message) → the new user message.

    Why memory goes last and not in the first system prompt: it changes every turn, and the engine
    reuses the KV cache only up to the first token that differs. In the first system prompt it would make
    the model re-read the whole conversation each turn (bench/turn_overhead.py measures it); here the
    persona and history stay a cached prefix, and small models heed facts placed next to the question.
    A template that refuses a late system message gets it merged into the user message (llm/template.py).
    """
    messages: list[dict] = []
    system = system_prompt(persona, user)
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    if memory_block:
        messages.append({"role": "system", "content": memory_block})
    messages.append({"role": "user", "content": user_text})
    return messages
