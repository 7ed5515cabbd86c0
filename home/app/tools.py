"""The app's small tools: copy a message, pin the reply mode, pick the adapter stack by hand, open the memory panel.

A mixin of HomeApp (app.py keeps the chat, the model and the retrain flow; features.py the other
screens). The rules live elsewhere: which stack a manual pick gives is `ChatSession.set_manual`, what
the memory panel reads and forgets is home/app/memory_view.py.
"""

from __future__ import annotations

from home.app.screens.memory import MemoryScreen
from home.app.widgets.messages import MessageList
from home.app.widgets.status_bar import StatusBar
from home.router.mode import AUTO, CHOICES, check_choice
from home.stack import StackSpec
from llm.errors import LLMError
from llm.fingerprint import same_base
from vault.errors import VaultError
from vault.manifest import AdapterEntry


def fitting_adapters(session) -> list[AdapterEntry]:
    """Registered adapters the loaded model can take: made for its base (`same_base`: its fingerprint,
    its v1 one, or none recorded, as `resolve_stack` accepts) and their file present. What the palette offers."""
    if session is None or session.engine is None:
        return []
    try:
        manifest = session.manifest()
    except VaultError:
        return []
    fingerprint = session.engine.info.fingerprint
    return [e for e in manifest.adapters.values()
            if same_base((e.base or {}).get("fingerprint"), fingerprint) and (session.vault.root / e.file).is_file()]


class ToolsMixin:
    # --- copy ---------------------------------------------------------------------------------

    def action_copy_last(self) -> None:
        """(Palette.) The last reply's text to the clipboard, whatever message is selected."""
        if self.chat is not None:
            self.chat.copy_message(self.chat.query_one(MessageList).last_reply)

    # --- the reply mode (dual mode: home/router/mode.py) ------------------------------------------

    def pin_mode(self, mode: str) -> None:
        """(Palette.) Pin the reply mode: "focused" or "character" for every turn, "auto" to let the
        router's task class choose again. Kept for the app's life, across chats and persona switches."""
        if self.session is None:
            return
        self.session.mode_pin = check_choice(mode)
        if self.session.router is None and self.session.mode_pin != AUTO:
            self.notify("The router is off, so no mode is applied (config.toml [router] enabled).",
                        severity="warning")
        if self.chat is not None:
            self.chat.refresh_status()
        self.notify(f"Reply mode: {self.session.mode_pin}" + (" (the task decides)" if self.session.mode_pin == AUTO
                                                            else " (pinned)"), title="Mode")

    def action_cycle_mode(self) -> None:
        """The mode key: auto → focused → character → auto."""
        if self.session is not None:
            self.pin_mode(CHOICES[(CHOICES.index(self.session.mode_pin) + 1) % len(CHOICES)])

    # --- the adapter stack by hand ------------------------------------------------------------

    async def use_stack(self, ids: list[str] | None) -> None:
        """(Palette.) `[id]`: that adapter (with what it was trained over) and nothing else; `[]`: the
        base model; None: automatic again (persona, voice toggle, router). See `ChatSession.set_manual`."""
        chat, session = self.chat, self.session
        if chat is None or session is None or not session.ready:
            self.notify("Wait for the model before choosing adapters.", severity="warning")
            return
        try:
            stack = session.set_manual(None if ids is None else [StackSpec(i, None) for i in ids])
        except (LLMError, VaultError) as exc:
            self.notify(f"adapters: {exc}", severity="error", timeout=8)
            return
        chat._stack_changed()
        if ids is None:
            after = StatusBar.format_stack(stack) if stack else "the router's pick per message"
            await chat.note(f"— adapters: automatic · {after} —")
        else:
            await chat.note(f"— adapters: {StatusBar.format_stack(stack)} (manual, until “automatic” "
                            "or a persona switch) —")

    # --- memory -------------------------------------------------------------------------------

    def action_memory(self) -> None:
        if self.session is not None and self.chat is not None:
            self.push_screen(MemoryScreen(self.session), callback=self._memory_closed)

    def _memory_closed(self, *_: object) -> None:
        if self.chat is not None:
            self.chat.refresh_status()
