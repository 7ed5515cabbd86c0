"""Two candidate replies side by side (home/pickbest.py decides what differs); 1 or 2, or a click, picks.

Both are generated one after the other on a thread worker (one engine); the choice is logged by
`Pick.choose` and the screen returns the picked index (None when dismissed: nothing is logged).
"""

from __future__ import annotations

import threading
import time
from contextlib import closing

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from home.app.widgets.messages import AssistantMessage
from home.pickbest import Pick
from home.stack import activate
from llm.errors import LLMError
from vault.errors import VaultError

FLUSH_S = 0.04
HINT = "Pick the better reply: 1 or 2 (or click it) · Esc cancels"


class CandidatePane(VerticalScroll):
    """One candidate; a click on it picks it."""

    def __init__(self, index: int, label: str) -> None:
        super().__init__(id=f"pick-{index + 1}", classes="pick-pane")
        self.index = index
        self.message = AssistantMessage(f"{index + 1} · {label}")

    def compose(self) -> ComposeResult:
        yield self.message

    def on_click(self) -> None:
        self.screen.choose(self.index)  # type: ignore[attr-defined]


class PickBestScreen(ModalScreen[int | None]):
    BINDINGS = [
        Binding("1", "choose(0)", "Pick 1"),
        Binding("2", "choose(1)", "Pick 2"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, session, pick: Pick) -> None:
        super().__init__()
        self.session = session
        self.pick = pick
        self.done = False
        """Both candidates finished: a pick is possible."""
        self.chosen: int | None = None
        self.error: str | None = None
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static(f"Two replies to: {self.pick.text}", id="pick-title", markup=False)
        with Horizontal(id="pick-panes"):
            for k, c in enumerate(self.pick.candidates):
                yield CandidatePane(k, c.label)
        yield Static("generating candidate 1…", id="pick-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._generate(self._cancel)

    @property
    def panes(self) -> list[CandidatePane]:
        return list(self.query(CandidatePane))

    @work(thread=True, exclusive=True, group="pick", exit_on_error=False)
    def _generate(self, cancel: threading.Event) -> None:
        app, session, error = self.app, self.session, None
        try:
            self.pick.recall()
        except (LLMError, VaultError) as exc:  # memory is a help, not a condition
            app.from_thread(self.notify, f"memory: {exc}", severity="warning")
        for k, pane in enumerate(self.panes):
            if cancel.is_set():
                break
            app.from_thread(self._hint, f"generating candidate {k + 1}…")
            reply = self.pick.reply(k)
            buffer: list[str] = []
            flushed = time.monotonic()
            try:
                with session.engine_turn():
                    activate(session.engine, session.vault, session.manifest(), reply.stack)
                    with closing(reply.stream(cancel)) as pieces:
                        for piece in pieces:
                            buffer.append(piece)
                            if time.monotonic() - flushed >= FLUSH_S:
                                app.call_from_thread(pane.message.append, "".join(buffer))
                                buffer.clear()
                                flushed = time.monotonic()
            except (LLMError, VaultError) as exc:
                error = str(exc)
            except RuntimeError:  # the app closed under us
                cancel.set()
                return
            if buffer:
                app.from_thread(pane.message.append, "".join(buffer))
            app.from_thread(pane.message.finish, stopped=reply.partial and error is None, error=error)
            if error:
                break
        app.from_thread(self._generated, error)

    def _hint(self, text: str) -> None:
        self.query_one("#pick-hint", Static).update(text)

    def _generated(self, error: str | None) -> None:
        self.error = error
        if self._cancel.is_set():
            self.dismiss(None)
            return
        self.done = error is None
        self._hint(f"error: {error}" if error else HINT)

    def choose(self, k: int) -> None:
        if not self.done or self.chosen is not None:
            if not self.done:
                self.notify("Wait for both candidates (Esc cancels).")
            return
        try:
            self.pick.choose(self.session.vault, k)
        except (OSError, VaultError) as exc:
            self.notify(f"pick-best: {exc}", severity="error", timeout=8)
            return
        self.chosen = k
        self.dismiss(k)

    def action_choose(self, k: int) -> None:
        self.choose(k)

    def stop(self) -> None:
        """Stop generating (the app quits); nothing is logged."""
        self._cancel.set()

    def action_cancel(self) -> None:
        """Stop generating (the worker dismisses when it has stopped), or close."""
        if self.done or self.error is not None:
            self.dismiss(None)
            return
        self._cancel.set()
