"""The roundtable screen: the personas' turns stream in one after another (home/roundtable.py holds
the rules); the prompt interjects; Esc stops, and closes once stopped; ctrl+r runs another round.

Each turn runs on a thread worker that owns the engine while it speaks; the user's interjections
are queued on the table and logged by that worker before the next turn, so one thread writes the log.
"""

from __future__ import annotations

import argparse
import threading
import time
from contextlib import closing

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from home.app.session import ChatSession
from home.app.widgets.messages import AssistantMessage, MessageList, SystemLine, UserMessage
from home.app.widgets.prompt_input import PromptInput
from home.generation import generation_params
from home.roundtable import Roundtable, Seat
from home.stack import activate, persona_specs, resolve_stack
from llm.errors import LLMError
from vault.errors import VaultError
from vault.logs import ConversationLog
from vault.personas import Persona

FLUSH_S = 0.04


def seat_for(session: ChatSession, persona: Persona) -> Seat:
    """The persona's own adapters (as the chat resolves them, without the user's voice: at the table
    each persona should sound like itself) and its own generation params under the app's overrides."""
    specs = persona_specs(persona)
    info = session.engine.info
    stack = resolve_stack(session.manifest(), specs, info.fingerprint, info.name)
    o = session.options
    params = generation_params(session.ctx, persona, argparse.Namespace(
        temperature=o.temperature, top_p=None, top_k=None, repeat_penalty=None, max_tokens=o.max_tokens, seed=o.seed))
    return Seat(persona, stack, params)


def build_table(session: ChatSession, persona_ids: list[str], topic: str, rounds: int) -> Roundtable:
    """A table in a new session of its own; LLMError/VaultError if a persona's adapters cannot be used."""
    seats = [seat_for(session, session.persona_by_id(pid)) for pid in persona_ids]
    log = ConversationLog.create(session.vault)

    def prepare(stack) -> None:
        activate(session.engine, session.vault, session.manifest(), stack)

    return Roundtable(session.engine, log, session.user, seats, topic, rounds, prepare)


class RoundtableScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "stop_or_close", "Stop / close"),
        Binding("ctrl+r", "more", "Another round"),
    ]

    def __init__(self, session: ChatSession, table: Roundtable) -> None:
        super().__init__()
        self.session = session
        self.table = table
        self.running = False
        self.error: str | None = None
        self._cancel = threading.Event()
        self._stopped = False

    def compose(self) -> ComposeResult:
        yield Static("", id="rt-header", markup=False)
        yield MessageList(id="rt-messages")
        yield PromptInput(id="rt-prompt", placeholder="Interject (Enter); Esc stops the table")
        yield Footer()

    async def on_mount(self) -> None:
        t = self.table
        messages = self.query_one(MessageList)
        await messages.add(SystemLine(f"— roundtable: {', '.join(s.name for s in t.seats)} · session {t.log.session} —"))
        await messages.add(UserMessage(t.user, t.topic))
        self.query_one(PromptInput).focus()
        self._go()

    def header(self) -> str:
        t = self.table
        state = "stopped" if self._stopped else ("speaking: " + t.next_seat.name if self.running else "done")
        rnd = min(t.round, t.rounds)
        return f"Roundtable · {', '.join(s.name for s in t.seats)} · round {rnd}/{t.rounds} · {state} · {t.topic}"

    def refresh_header(self) -> None:
        self.query_one("#rt-header", Static).update(self.header())

    def _go(self) -> None:
        if self.running:
            return
        self._stopped = False
        self._cancel = threading.Event()
        self.running = True
        self.refresh_header()
        self._run(self._cancel)

    @work(thread=True, exclusive=True, group="roundtable", exit_on_error=False)
    def _run(self, cancel: threading.Event) -> None:
        app, t = self.app, self.table
        error = None
        try:
            while t.remaining and not cancel.is_set():
                reply: AssistantMessage = app.call_from_thread(self._begin_turn, t.next_seat.name)
                buffer: list[str] = []
                flushed = time.monotonic()
                try:
                    with self.session.engine_turn(), closing(t.speak(cancel)) as pieces:  # closed early: partial
                        for piece in pieces:
                            buffer.append(piece)
                            if time.monotonic() - flushed >= FLUSH_S:
                                app.call_from_thread(reply.append, "".join(buffer))
                                buffer.clear()
                                flushed = time.monotonic()
                except (LLMError, VaultError) as exc:
                    error = str(exc)
                if buffer:
                    app.call_from_thread(reply.append, "".join(buffer))
                app.call_from_thread(self._end_turn, reply, cancel.is_set(), error)
                if error:
                    break
        except RuntimeError:  # the app closed under us: stop here, nobody is left to show it to
            cancel.set()
        t.drain()  # an interjection typed during the last turn is logged even if no turn follows
        app.from_thread(self._finished, error)

    async def _begin_turn(self, name: str) -> AssistantMessage:
        reply = AssistantMessage(name)
        await self.query_one(MessageList).add(reply)
        self.refresh_header()
        return reply

    async def _end_turn(self, reply: AssistantMessage, stopped: bool, error: str | None) -> None:
        await reply.finish(stopped=stopped and error is None, error=error)

    def _finished(self, error: str | None) -> None:
        self.running = False
        self.error = error
        if error:
            self.notify(error, severity="error", timeout=8)
        elif self.table.has_pending and not self._stopped:  # typed just as the last turn ended
            self.action_more()
            return
        self.refresh_header()

    async def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        """Your words go to the table: the next speaker answers them (a finished table goes on)."""
        message.stop()
        self.query_one(PromptInput).clear()
        self.table.interject(message.text)
        await self.query_one(MessageList).add(UserMessage(self.table.user, message.text))
        if not self.running:
            self.action_more()

    def action_more(self) -> None:
        if self.running:
            return
        self.table.more()
        self._go()

    def stop(self) -> None:
        """Stop after (the partial of) the current turn; it is logged with partial=true."""
        if self.running:
            self._stopped = True
            self._cancel.set()
            self.refresh_header()

    async def action_stop_or_close(self) -> None:
        if self.running:
            self.stop()
            return
        self.table.drain()  # no worker runs now: this thread may write the log
        self.dismiss(None)
