"""The roundtable's setup: which personas (two or more), the topic, how many rounds. Returns a plan;
the app opens the roundtable screen with it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, SelectionList, Static

from home.roundtable import DEFAULT_ROUNDS, MAX_ROUNDS
from vault.personas import Persona


@dataclass(frozen=True)
class RoundtablePlan:
    personas: list[str]  # persona ids, in speaking order
    topic: str
    rounds: int


class RoundtableSetup(ModalScreen[RoundtablePlan | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, personas: list[Persona], preselect: list[str] | None = None) -> None:
        super().__init__()
        self.personas = personas
        self.preselect = set(preselect if preselect is not None else [p.id for p in personas[:2]])

    def compose(self) -> ComposeResult:
        with Vertical(id="rt-setup"):
            yield Static("Roundtable", id="rt-setup-title")
            yield Static("Who sits at the table (space toggles; they speak in this order):", classes="rt-label")
            yield SelectionList[str](*[(p.name, p.id, p.id in self.preselect) for p in self.personas],
                                     id="rt-personas")
            yield Static("Topic:", classes="rt-label")
            yield Input(placeholder="e.g. Should I learn Rust or Go first?", id="rt-topic")
            with Horizontal(id="rt-rounds-row"):
                yield Static("Rounds:", classes="rt-label")
                yield Input(str(DEFAULT_ROUNDS), id="rt-rounds", type="integer", max_length=2)
            yield Static("", id="rt-setup-error", markup=False)
            with Horizontal(id="rt-buttons"):
                yield Button("Start", id="rt-start", variant="primary")
                yield Button("Cancel", id="rt-cancel")

    def on_mount(self) -> None:
        self.query_one("#rt-topic", Input).focus()

    def plan(self) -> RoundtablePlan | str:
        """The plan, or what is wrong with the form."""
        chosen = list(self.query_one(SelectionList).selected)
        order = [p.id for p in self.personas if p.id in chosen]
        topic = self.query_one("#rt-topic", Input).value.strip()
        rounds_text = self.query_one("#rt-rounds", Input).value.strip() or str(DEFAULT_ROUNDS)
        if len(order) < 2:
            return "Pick at least two personas."
        if not topic:
            return "Give the table a topic."
        rounds = int(rounds_text) if rounds_text.lstrip("-").isdigit() else 0
        if not 1 <= rounds <= MAX_ROUNDS:
            return f"Rounds: a whole number from 1 to {MAX_ROUNDS}."
        return RoundtablePlan(order, topic, rounds)

    def _start(self) -> None:
        plan = self.plan()
        if isinstance(plan, str):
            self.query_one("#rt-setup-error", Static).update(plan)
            return
        self.dismiss(plan)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "rt-start":
            self._start()
        else:
            self.dismiss(None)
