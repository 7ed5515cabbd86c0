"""Ask once before something that cannot be undone (forgetting a memory) or that takes the machine for
minutes (a retrain). Returns True for yes.

y or a click on the red button says yes; n, Esc or the other button says no. Enter is not an answer:
nothing is focused, so a key pressed out of habit cannot delete anything.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

DETAIL_CHARS = 300


class ConfirmScreen(ModalScreen[bool]):
    AUTO_FOCUS = None
    BINDINGS = [Binding("y", "dismiss(True)", "Yes"), Binding("n,escape", "dismiss(False)", "No")]

    def __init__(self, question: str, detail: str = "", yes: str = "Yes", no: str = "Keep",
                 no_means: str = "keep it", danger: bool = True) -> None:
        super().__init__()
        self.question = question
        self.detail = detail if len(detail) <= DETAIL_CHARS else detail[: DETAIL_CHARS - 1] + "…"
        self.yes, self.no, self.no_means, self.danger = yes, no, no_means, danger

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(self.question, id="confirm-question", markup=False)
            if self.detail:
                yield Static(self.detail, id="confirm-detail", markup=False)
            yield Static(f"y: {self.yes.lower()} · n or Esc: {self.no_means}", id="confirm-keys", markup=False)
            with Horizontal(id="confirm-buttons"):
                yield Button(self.yes, variant="error" if self.danger else "primary", id="confirm-yes")
                yield Button(self.no, id="confirm-no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")
