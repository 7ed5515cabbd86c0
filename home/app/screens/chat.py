"""The chat screen: persona bar, messages, prompt, status bar; replies generated in a thread worker.

The worker iterates `ChatSession.send` (which is `Conversation.send`: logs, adapters, streaming) and
hands text to the UI every FLUSH_S seconds with `call_from_thread`, so the event loop sees ~25 small
updates a second rather than one per token. Esc sets the worker's `threading.Event`; the engine stops
at the next token and Conversation logs the reply with partial=true.
"""

from __future__ import annotations

import threading
import time

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, TextArea

from home.app.commands import session_line
from home.app.draft import PAUSE_S
from home.app.session import ChatSession
from home.app.session_stack import VOICE_STEP
from home.app.widgets.messages import AssistantMessage, MessageList, SystemLine, UserMessage
from home.app.widgets.persona_bar import PersonaBar
from home.app.widgets.prompt_input import PromptInput
from home.app.widgets.status_bar import StatusBar
from home.app.widgets.train_panel import TrainPanel
from llm.errors import LLMError
from vault.errors import VaultError

FLUSH_S = 0.04
FIRST_HINT = ("New chat: type below, Enter sends. The keys on the top line switch persona, ctrl+p has "
              "everything else, F12 lists every key.")
TRAIN_HINT = "No voice adapter for {user} yet: press ctrl+t (Retrain my voice) or run `home train`."


class ChatScreen(Screen[None]):
    BINDINGS = [
        # Esc stops the reply when one streams, else cancels training when it runs, else is not shown:
        # the footer says what it would do now (check_action).
        Binding("escape", "cancel", "Stop reply", id="cancel"),
        Binding("escape", "cancel_training", "Cancel training", id="cancel_training"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="regenerate"),
        Binding("ctrl+n", "new_chat", "New chat", id="new_chat"),
        Binding("ctrl+v", "toggle_voice", "Voice", id="voice", priority=True),
        Binding("ctrl+up", "voice_scale(1)", "Voice +", id="voice_up", show=False),
        Binding("ctrl+down", "voice_scale(-1)", "Voice −", id="voice_down", show=False),
        # priority: the focused prompt (a TextArea) binds ctrl+y to redo
        Binding("ctrl+y", "copy", "Copy", id="copy", show=False, priority=True),
        Binding("ctrl+o", "app.memory", "Memory", id="memory", show=False),
    ]

    def __init__(self, session: ChatSession) -> None:
        super().__init__()
        self.session = session
        self.generating = False
        """True from Enter until the reply is finished; a second send waits for it."""
        self.stack_applied: list[tuple[str, float]] | None = None
        """The stack the engine last confirmed (benchmarks wait on it after a persona switch)."""
        self._cancel: threading.Event | None = None
        self._notices_shown = 0  # of the backend's `notices`
        self._draft_timer: Timer | None = None  # fires PAUSE_S after the last edit of the prompt

    def compose(self) -> ComposeResult:
        yield PersonaBar(self.session.personas, id="personas")
        yield TrainPanel(id="train")
        yield MessageList(id="messages")
        yield PromptInput(id="prompt", placeholder="Message (Enter sends, ctrl+j new line) — loading model…")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PersonaBar).active = self.session.persona.id if self.session.persona else None
        self.refresh_status()
        self.query_one(PromptInput).focus()

    # --- status -------------------------------------------------------------------------------

    def model_ready(self) -> None:
        """Called by the app once its loader worker has the engine."""
        self.query_one(PromptInput).placeholder = "Message (Enter sends, ctrl+j new line)"
        self.stack_applied = list(self.session.stack)
        self.refresh_status()
        opening = next((m["content"] for m in self.session.conversation.history if m.get("greeting")), None)
        if self.session.options.resume:  # `home chat --continue`: the session's messages, as a resume shows them
            self.call_later(self._show_records, self.session.opening, f"— resumed {self.session.conversation.log.session} —")
        elif opening is not None:
            self.call_later(self._show_greeting, opening)
        elif not self.query_one(MessageList).children:
            self.call_later(self.note, self._first_line())

    def _first_line(self) -> str:
        """What an empty first screen says (it said nothing: a new user did not know the keys, and after a
        restart did not know the last chat could come back)."""
        line = FIRST_HINT
        current = self.session.conversation.log.session
        last = next((s for s in self.session.recent_sessions(2) if s.id != current), None)
        if last is not None:
            line += f" Your last chat ({session_line(last.path, last.modified)}) is in ctrl+p → Resume."
        return line

    async def _show_greeting(self, text: str) -> None:
        """The persona's greeting, as its first message of the chat."""
        persona = self.session.persona
        reply = AssistantMessage(persona.name if persona else "home", text)
        await self.query_one(MessageList).add(reply)
        await reply.finish(stopped=False)

    def refresh_status(self) -> None:
        s, bar = self.session, self.query_one(StatusBar)
        if s.engine is not None:
            bar.model, bar.n_ctx = s.engine.info.name, s.engine.n_ctx
        bar.user = s.user
        bar.persona = s.persona.name if s.persona else "none"
        bar.stack = StatusBar.format_stack(s.stack) + (" (manual)" if s.manual is not None else "")
        bar.tok_per_s = s.tok_per_s
        bar.ctx_used = s.context_used
        bar.memory = s.memory_status()
        bar.mode = "" if s.mode_pin == "auto" else s.mode_pin

    async def note(self, text: str) -> None:
        await self.query_one(MessageList).add(SystemLine(text))

    # --- turns --------------------------------------------------------------------------------

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        """Typing: once it pauses, embed the draft in a worker (home/app/draft.py), so that Enter does
        not wait for MiniLM; a text edited after that is embedded on its turn as before."""
        if not isinstance(event.text_area, PromptInput):
            return
        if self._draft_timer is not None:
            self._draft_timer.stop()
        self._draft_timer = self.set_timer(PAUSE_S, self._embed_draft)

    def _embed_draft(self) -> None:
        self._draft_timer = None
        text = self.query_one(PromptInput).text.strip()
        if text and self.session.ready:
            self._draft(text)

    @work(thread=True, group="draft", exit_on_error=False)
    def _draft(self, text: str) -> None:
        self.session.drafts.prepare(text)

    async def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        if not self.session.ready:
            self.notify("The model is still loading; your text stays in the box.", severity="warning")
            return
        if self.generating:
            self.notify("A reply is still coming: wait, or press Esc to stop it.")
            return
        self.query_one(PromptInput).clear()
        await self.query_one(MessageList).add(UserMessage(self.session.user, message.text))
        await self._start_reply(message.text)

    async def _start_reply(self, text: str) -> None:
        who = self.session.persona.name if self.session.persona else "home"
        reply = AssistantMessage(who)
        await self.query_one(MessageList).add(reply)
        self._cancel = threading.Event()
        self.generating = True
        self.refresh_bindings()
        self._generate(text, reply, self._cancel)

    @work(thread=True, exclusive=True, group="turn", exit_on_error=False)
    def _generate(self, text: str, reply: AssistantMessage, cancel: threading.Event) -> None:
        buffer: list[str] = []
        flushed = time.monotonic()
        error = None
        try:
            for piece in self.session.send(text, cancel):
                buffer.append(piece)
                if time.monotonic() - flushed >= FLUSH_S:
                    self.app.call_from_thread(reply.append, "".join(buffer))
                    buffer.clear()
                    flushed = time.monotonic()
        except (LLMError, VaultError) as exc:
            error = str(exc)
        if buffer:
            self.app.from_thread(reply.append, "".join(buffer))
        self.app.from_thread(self._reply_done, reply, error)

    async def _reply_done(self, reply: AssistantMessage, error: str | None) -> None:
        last = self.session.conversation.last
        stopped = bool(last and last.record.get("partial")) and error is None
        await reply.finish(stopped=stopped, error=error)
        self.generating = False
        self._cancel = None
        self.refresh_bindings()
        if error:
            self.notify(error, severity="error", timeout=8)
        notices = getattr(self.session.engine, "notices", ())  # a server's rules, each said once (vLLM)
        if len(notices) > self._notices_shown:
            self.notify("; ".join(notices[self._notices_shown:]), title="Server", severity="warning", timeout=12)
            self._notices_shown = len(notices)
        self.refresh_status()
        self.app.after_turn()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.generating
        if action == "cancel_training":  # bound here, not on the app, so that a reply's Esc comes first
            return self.app.training_cancellable
        return True

    def action_cancel_training(self) -> None:
        self.app.action_cancel_training()

    def action_cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    async def action_regenerate(self) -> None:
        """Generate the last reply again for the same history. The log keeps the old exchange and
        records the new one as a fresh user + assistant pair."""
        if self.generating or not self.session.ready:
            return
        text = self.session.pop_last_exchange()
        if text is None:
            self.notify("Nothing to regenerate yet.")
            return
        old = self.query_one(MessageList).last_reply
        if old is not None:
            await old.remove()
        await self._start_reply(text)

    def on_message_list_selected(self, event: MessageList.Selected) -> None:
        self.query_one(PromptInput).focus()  # the click focused the list: typing goes on in the prompt
        if event.message is not None:
            key = self.session.config.keys.get("copy", "ctrl+y")
            self.notify(f"Message selected: {key} copies it (click it again to unselect).", title="Copy", timeout=4)

    def action_copy(self) -> None:
        """The selected message (a click selects one), else the last reply, to the clipboard."""
        messages = self.query_one(MessageList)
        self.copy_message(messages.selected or messages.last_reply)

    def copy_message(self, message: UserMessage | AssistantMessage | None) -> None:
        """OSC 52 through Textual (most terminals and tmux); the selection is done with."""
        if message is None or not message.text.strip():
            self.notify("Nothing to copy yet.", title="Copy")
            return
        self.app.copy_to_clipboard(message.text)
        self.query_one(MessageList).select(None)
        what = "your message" if isinstance(message, UserMessage) else "the reply"
        self.notify(f"Copied {what} to the clipboard ({len(message.text):,} characters).", title="Copy")

    # --- sessions -----------------------------------------------------------------------------

    async def new_chat(self, session_id: str | None = None) -> None:
        """Start a fresh session, or resume one (its history shown and given to the model)."""
        if self.generating or not self.session.ready:
            self.notify("Wait for the model (or the reply) first.", severity="warning")
            return
        records = self.session.new_conversation(session_id)
        await self.query_one(MessageList).clear()
        log = self.session.conversation.log
        await self._show_records(records, f"— resumed {log.session} —" if session_id else f"— new session {log.session} —")

    async def _show_records(self, records: list[dict], note: str) -> None:
        """A session's messages as the chat shows them (its latest `MessageList.keep`), then `note`."""
        messages = self.query_one(MessageList)
        if len(records) > messages.keep:
            await messages.not_shown(len(records) - messages.keep)
            records = records[-messages.keep:]
        for r in records:
            if r["role"] == "user":
                await messages.add(UserMessage(r.get("user") or self.session.user, r.get("text", "")))
            else:
                persona = self.session.persona_by_id(r.get("persona"))
                reply = AssistantMessage(persona.name if persona else r.get("persona") or "home", r.get("text", ""))
                await messages.add(reply)
                await reply.finish(stopped=bool(r.get("partial")))
        await self.note(note)
        self.refresh_status()

    async def action_new_chat(self) -> None:
        await self.new_chat()

    # --- persona and voice --------------------------------------------------------------------

    async def switch_persona(self, pid: str | None) -> None:
        """Switch mid-session; the model stays loaded and only the adapter stack changes."""
        persona = self.session.persona_by_id(pid)
        try:
            stack = self.session.set_persona(persona)
        except (LLMError, VaultError) as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.query_one(PersonaBar).active = pid
        self._stack_changed()  # the switch first, the note after it: mounting a line takes a frame
        await self.note(f"— persona: {persona.name if persona else 'base'} · adapters {StatusBar.format_stack(stack)} —")
        opening = self.session.greet()  # a chat the user has not spoken in yet: the new persona opens it
        if opening is not None:
            await self._show_greeting(opening)

    def _stack_changed(self) -> None:
        """Activate the new stack: right here when no reply holds the engine and every adapter is
        loaded (a sub-millisecond `set_adapters`), else in a worker (it waits for the reply, or loads)."""
        self.stack_applied = None
        applied = None
        if self.session.ready and not self.generating and self.session.stack_loaded():
            try:
                applied = self.stack_applied = self.session.apply_stack(blocking=False)
            except (LLMError, VaultError) as exc:
                self.notify(str(exc), severity="error", timeout=8)
                applied = []
        if applied is None and self.session.ready:  # a reply or a background call holds the engine
            self._apply_stack()
        self.refresh_status()

    @work(thread=True, exclusive=True, group="stack", exit_on_error=False)
    def _apply_stack(self) -> None:
        """Activation takes the engine lock, which a running reply holds: never on the UI thread."""
        try:
            stack = self.session.apply_stack()
        except (LLMError, VaultError) as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        self.stack_applied = stack

    def action_toggle_voice(self) -> None:
        try:
            on = self.session.toggle_voice()
        except (LLMError, VaultError) as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        if on is None:
            self.notify(TRAIN_HINT.format(user=self.session.user), title="Voice", timeout=8)
            return
        self.notify(f"Your voice adapter is {'on' if on else 'off'}.", title="Voice")
        self._stack_changed()

    def action_voice_scale(self, direction: int) -> None:
        if not self.session.voice_on:
            self.notify("Turn your voice adapter on first (ctrl+v).")
            return
        try:
            self.session.nudge_voice(direction * VOICE_STEP)
        except (LLMError, VaultError) as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self._stack_changed()
