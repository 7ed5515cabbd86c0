"""The app's actions beyond the daily chat: roundtable, pick-best, search past sessions, switch user.

A mixin of HomeApp (app.py keeps the chat, the model and the retrain flow). Each action opens its
screen from screens/ and, when that screen returns, puts the chat back in order: a roundtable or a
pick-best left other adapters on the engine, so the chat's own stack is applied again.
"""

from __future__ import annotations

from functools import partial

from home.app.screens.pick_best import PickBestScreen
from home.app.screens.roundtable import RoundtableScreen, build_table
from home.app.screens.roundtable_setup import RoundtablePlan, RoundtableSetup
from home.app.screens.search import SearchScreen
from home.app.screens.user_switch import UserSwitchScreen
from home.app.widgets.messages import AssistantMessage, MessageList
from home.pickbest import Pick, plan
from home.stack import Stack, StackSpec, resolve_stack
from llm.errors import LLMError
from vault.errors import VaultError
from vault.manifest import ManifestStore
from vault.preferences import check_user_name


def voice_stack(session) -> Stack | None:
    """The user's voice adapter as the chat would stack it (with anything it was trained over), or None
    when the user has none or it does not fit the loaded model."""
    voice = session.voice_adapter()
    if voice is None:
        return None
    manifest, info = session.manifest(), session.engine.info
    scale = session.voice_scale if session.voice_scale is not None else manifest.adapter(voice).scale
    try:
        return resolve_stack(manifest, [StackSpec(voice, scale)], info.fingerprint, info.name)
    except LLMError:
        return None


def known_users(session) -> list[str]:
    """The manifest's users, the config's and the current one."""
    try:
        users = set(session.manifest().users)
    except VaultError:
        users = set()
    return sorted(users | {session.user, session.config.user})


class FeaturesMixin:
    def _chat_idle(self, what: str) -> bool:
        """The chat is up, the model loaded and no reply running; else say why not."""
        chat, session = self.chat, self.session
        if chat is None or session is None:
            return False
        if not session.ready or chat.generating:
            self.notify(f"Wait for the model (or the reply) before {what}.", severity="warning")
            return False
        return True

    def _back_to_chat(self, *_: object) -> None:
        if self.chat is not None:
            self.chat._stack_changed()
            self.chat.refresh_status()

    def stop_generation(self) -> None:
        """(Quit.) Stop a roundtable turn or a pick-best candidate, wherever it runs."""
        for screen in self.screen_stack:
            if isinstance(screen, RoundtableScreen | PickBestScreen):
                screen.stop()

    # --- roundtable ---------------------------------------------------------------------------

    def action_roundtable(self) -> None:
        if self._chat_idle("a roundtable"):
            self.push_screen(RoundtableSetup(self.session.personas), callback=self._open_roundtable)

    def _open_roundtable(self, plan_: RoundtablePlan | None) -> None:
        if plan_ is None:
            return
        try:
            table = build_table(self.session, plan_.personas, plan_.topic, plan_.rounds)
        except (LLMError, VaultError) as exc:
            self.notify(f"roundtable: {exc}", severity="error", timeout=8)
            return
        self.push_screen(RoundtableScreen(self.session, table), callback=self._back_to_chat)

    # --- pick-best ----------------------------------------------------------------------------

    def action_pick_best(self) -> None:
        if not self._chat_idle("picking between two replies"):
            return
        s = self.session
        try:
            pick = Pick.for_last_message(s.conversation, plan(s.stack, s.params(), voice_stack(s)))
        except (LLMError, VaultError) as exc:
            self.notify(f"pick-best: {exc}", severity="error", timeout=8)
            return
        if pick is None:
            self.notify("Send a message first: then ctrl+b shows two replies to it side by side.")
            return
        self.push_screen(PickBestScreen(s, pick), callback=partial(self._picked, pick))

    async def _picked(self, pick: Pick, k: int | None) -> None:
        """The chosen candidate replaces the last reply on screen (the log and history already have it)."""
        chat = self.chat
        if k is not None and chat is not None:
            messages = chat.query_one(MessageList)
            old = messages.last_reply
            if old is not None:
                await old.remove()
            persona = self.session.persona
            chosen = pick.candidates[k]
            reply = AssistantMessage(persona.name if persona else "home", chosen.reply.text)
            await messages.add(reply)
            await reply.finish()
            reply.border_subtitle = f"picked {k + 1} of 2 · {chosen.label}"
        self._back_to_chat()
        if k is not None:
            self.offer_picks()  # type: ignore[attr-defined]

    # --- search past sessions -----------------------------------------------------------------

    def action_search(self) -> None:
        if self.session is not None and self.chat is not None:
            self.push_screen(SearchScreen(self.session.vault), callback=self._search_done)

    async def _search_done(self, session_id: str | None) -> None:
        if session_id:
            await self.action_resume(session_id)

    # --- switch user --------------------------------------------------------------------------

    async def action_switch_user(self, name: str = "") -> None:
        if not self._chat_idle("switching user"):
            return
        if name:
            await self.switch_user(name)
        else:
            self.push_screen(UserSwitchScreen(known_users(self.session), self.session.user), callback=self.switch_user)

    async def switch_user(self, name: str | None) -> None:
        """Talk as `name` from now on: a fresh session (the last user's chat is theirs), the status bar,
        the logs and the voice adapter follow. A new name is added to the manifest's users."""
        s, chat = self.session, self.chat
        if not name or s is None or chat is None or name == s.user:
            return
        try:
            check_user_name(name)
            if name not in s.manifest().users:
                with ManifestStore(s.vault).update() as m:
                    m.ensure_user(name)
            s.set_user(name)
        except (LLMError, VaultError) as exc:
            self.notify(f"switch user: {exc}", severity="error", timeout=8)
            return
        await chat.new_chat()
        await chat.note(f"— you are now {name} —")
        self._back_to_chat()
