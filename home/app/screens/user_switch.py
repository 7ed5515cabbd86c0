"""Switch user: pick one of the manifest's users, or type a new name. Returns the name (the app
switches: a new session, the status bar, the voice adapter all follow)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from vault.errors import VaultError
from vault.preferences import check_user_name


class UserSwitchScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, users: list[str], current: str) -> None:
        super().__init__()
        self.users = users
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="user-box"):
            yield Static(f"Switch user (now: {self.current})", id="user-title", markup=False)
            yield OptionList(*[Option(f"{u}{'  (current)' if u == self.current else ''}", id=u) for u in self.users],
                             id="user-list")
            yield Input(placeholder="…or type a new name and press Enter", id="user-new")
            yield Static("", id="user-error", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        name = event.value.strip()
        try:
            self.dismiss(check_user_name(name))
        except VaultError as exc:
            self.query_one("#user-error", Static).update(str(exc))
