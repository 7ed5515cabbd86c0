"""Shown instead of the chat when Home cannot start (no model, a broken config): the one-line reason
and what to do about it, never a traceback."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Static

from llm.errors import ModelError
from vault.errors import PersonaError

MODEL_HINT = ("Check the path given with --model (or `model` in config.toml); \"\" means the built-in "
              "SmolLM2. `home doctor` checks the whole setup.")
PERSONA_HINT = ("Start with a persona from that list (--persona NAME, or `persona` in config.toml; `home personas "
                "list` shows them), or fix the card file named above.")
OTHER_HINT = "Fix the file named above, then start Home again. `home doctor` checks the whole setup."


class ErrorScreen(Screen[None]):
    BINDINGS = [Binding("q,escape,enter", "app.quit", "Quit")]

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.message = str(error)
        # a persona typo named no file: "fix the file named above" sent a new user looking for one
        self.hint = (MODEL_HINT if isinstance(error, ModelError) else PERSONA_HINT if isinstance(error, PersonaError)
                     else OTHER_HINT)

    def compose(self) -> ComposeResult:
        with Center(), Vertical(id="error-box"):
            yield Static("Home cannot start", id="error-title")
            yield Static(self.message, id="error-message", markup=False)
            yield Static(self.hint, id="error-hint", markup=False)
            yield Static("Press q to quit.", id="error-keys")
