"""The personas with their hotkeys, the active one highlighted: switching is one key away."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from vault.personas import Persona, hotkeys

BASE_KEY = "f1"


def _natural(key: str) -> tuple[str, int]:
    """f2 < f10: the letters, then the number."""
    head = key.rstrip("0123456789")
    tail = key[len(head):]
    return head, int(tail) if tail else -1


class PersonaBar(Static):
    """`F1 base  F2 Sage  F3 Quill …`; `active` is a persona id, or None for the base model."""

    active: reactive[str | None] = reactive(None)

    def __init__(self, personas: list[Persona], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.entries: list[tuple[str, str | None, str]] = [(BASE_KEY, None, "base")]
        names = {p.id: p.name for p in personas}
        keyed = [(key, pid, names[pid]) for key, pid in hotkeys(personas).items()]  # the keys that work
        self.entries += sorted(keyed, key=lambda e: _natural(e[0]))

    def render(self) -> Text:
        text = Text()
        for key, pid, name in self.entries:
            style = "reverse bold" if pid == self.active else ""
            text.append(f" {key.upper()} ", style="bold")
            text.append(f" {name} ", style=style)
            text.append(" ")
        return text
