"""Build the chat messages for one turn from a persona card, memory, and the session's history.

Small models follow short system prompts best, so only the card fields that describe *how to speak*
go in; `{{char}}` and `{{user}}` are substituted as card authors expect.

The card's example dialogue (`mes_example`) goes into the system prompt when the context allows, by one
rule: whole `<START>` blocks, in the card's order, while the whole system prompt stays within a quarter of
the context window (`n_ctx // EXAMPLES_SHARE` tokens). It depends on the card and the window only, never on
the conversation's length, so the system prompt stays the same cached prefix from turn to turn (the
history is what the engine trims when a long chat fills the window).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from vault.personas import Persona

_MACRO = re.compile(r"\{\{\s*(char|user)\s*\}\}", re.IGNORECASE)
_START = re.compile(r"<\s*start\s*>", re.IGNORECASE)
EXAMPLES_SHARE = 4  # the system prompt, example dialogue included, fills at most n_ctx // 4 tokens
# (count tokens, the most the system prompt may hold): what `system_prompt` measures examples against
Budget = tuple[Callable[[str], int], int]


def fill(text: str, char: str, user: str) -> str:
    return _MACRO.sub(lambda m: char if m.group(1).lower() == "char" else user, text or "").strip()


def _name(persona: Persona) -> str:
    return persona.data.get("name") or persona.id


def greeting(persona: Persona | None, user: str) -> str | None:
    """How the persona opens a new chat: the card's `first_mes`, else its first alternate greeting."""
    if persona is None:
        return None
    alternates = persona.data.get("alternate_greetings")
    for text in [persona.data.get("first_mes"), *(alternates if isinstance(alternates, list) else [])]:
        filled = fill(text, _name(persona), user) if isinstance(text, str) else ""
        if filled:
            return filled
    return None


def example_blocks(persona: Persona, user: str) -> list[str]:
    """The card's example dialogue as its `<START>` blocks, macros filled, empty blocks dropped."""
    raw = persona.data.get("mes_example")
    if not isinstance(raw, str):
        return []
    return [b for b in (fill(part, _name(persona), user) for part in _START.split(raw)) if b]


def prompt_budget(engine: object) -> Budget | None:
    """The example-dialogue budget for a backend: its tokenizer and a quarter of its window."""
    n_ctx, tokenize = getattr(engine, "n_ctx", None), getattr(engine, "tokenize", None)
    if not isinstance(n_ctx, int) or n_ctx <= 0 or tokenize is None:
        return None
    return (lambda text: len(tokenize(text))), n_ctx // EXAMPLES_SHARE


def system_prompt(persona: Persona | None, user: str, budget: Budget | None = None) -> str | None:
    """The persona's card as a system prompt; with a `budget`, its example dialogue as far as it fits."""
    parts: list[str] = []
    if persona is not None:
        data = persona.data
        name = _name(persona)
        for key in ("system_prompt", "description", "personality", "scenario"):
            value = fill(data.get(key) or "", name, user)
            if value:
                parts.append(value if key == "system_prompt" else f"{key.capitalize()}: {value}")
        post = fill(data.get("post_history_instructions") or "", name, user)
        if budget is not None:
            examples = _fitting_examples(parts, post, example_blocks(persona, user), budget)
            if examples:
                parts.append(examples)
        if post:
            parts.append(post)
    return "\n\n".join(parts) or None


def _fitting_examples(parts: list[str], post: str, blocks: list[str], budget: Budget) -> str:
    """Whole blocks in order while the system prompt stays within the budget (the rule above)."""
    count, limit = budget
    chosen: list[str] = []
    for block in blocks:
        text = "Example dialogue:\n" + "\n\n".join([*chosen, block])
        if count("\n\n".join([*parts, text, post])) > limit:
            break
        chosen.append(block)
    return "Example dialogue:\n" + "\n\n".join(chosen) if chosen else ""


def build_messages(
    persona: Persona | None,
    history: list[dict],
    user_text: str,
    user: str,
    memory_block: str | None = None,
    budget: Budget | None = None,
) -> list[dict]:
    """System (persona, its example dialogue within `budget`) → prior turns → this turn's memory block (a
    system message) → the new user message.

    Why memory goes last and not in the first system prompt: it changes every turn, and the engine
    reuses the KV cache only up to the first token that differs. In the first system prompt it would make
    the model re-read the whole conversation each turn (bench/turn_overhead.py measures it); here the
    persona and history stay a cached prefix, and small models heed facts placed next to the question.
    A template that refuses a late system message gets it merged into the user message (llm/template.py).
    """
    messages: list[dict] = []
    system = system_prompt(persona, user, budget)
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    if memory_block:
        messages.append({"role": "system", "content": memory_block})
    messages.append({"role": "user", "content": user_text})
    return messages
