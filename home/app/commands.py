"""The command palette (ctrl+p): everything that is not worth a key of its own.

One Provider: its commands are built fresh each time the palette opens, so new personas and sessions
appear without restarting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import lru_cache, partial
from pathlib import Path

from textual.command import DiscoveryHit, Hit, Hits, Provider

from home.app.features import known_users
from home.app.tools import fitting_adapters
from vault.logs import first_message
from vault.personas import hotkeys


@lru_cache(maxsize=256)
def session_line(path: Path, modified: float) -> str:
    """What a "Resume session" entry says under its id: when it was last written and how it began (the id
    alone told a user nothing about which chat it was). Cached per file version: the palette asks on
    every keystroke."""
    when = datetime.fromtimestamp(modified).strftime("%b %d %H:%M")
    text = " ".join((first_message(path) or "").split())
    said = f"“{text[:59]}…”" if len(text) > 60 else f"“{text}”" if text else "no message of yours yet"
    return f"{when} · {said}"


class HomeCommands(Provider):
    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        session = app.session  # type: ignore[attr-defined]
        keys = session.config.keys if session is not None else {}
        out: list[tuple[str, Callable[[], object], str]] = [
            ("New session", app.action_new_chat, "start a fresh conversation log"),
            ("Export session as Markdown", app.action_export, "write <vault>/logs/<session>.md"),
            ("View adapters", app.action_adapters, "the registered adapters and their metrics"),
            ("Persona: base (no persona)", partial(app.action_persona, ""), "the model's own manner"),
            ("Retrain my voice", app.action_retrain, "train your voice adapter on your chat logs (ctrl+t)"),
            ("Learn from your picks", app.action_learn_from_picks,
             "preference training (DPO) of your voice from your pick-best choices; it becomes your voice only "
             "if at least as good"),
            ("Roundtable…", app.action_roundtable, "two or more personas take turns on a topic; you can interject"),
            ("Pick best of two replies", app.action_pick_best,
             "two candidates for your last message side by side; your pick is kept as a preference (ctrl+b)"),
            ("Search past sessions", app.action_search, "full text over every session's log; open one to resume (ctrl+f)"),
            ("Switch user…", app.action_switch_user, "pick a user or type a new name; logs and voice follow"),
            ("Copy last reply", app.action_copy_last,
             f"to the clipboard; click a message, then {keys.get('copy', 'ctrl+y')}, to copy that one"),
            ("Memory…", app.action_memory,
             f"what the last reply used, search, your gestalts; forget items ({keys.get('memory', 'ctrl+o')})"),
            ("Mode: automatic", partial(app.pin_mode, "auto"),
             "tasks answered focused, chat in character, from the router's task class (f9 cycles)"),
            ("Mode: focused", partial(app.pin_mode, "focused"),
             "every reply answers the task directly, in the persona's voice (its adapters turned down)"),
            ("Mode: in character", partial(app.pin_mode, "character"),
             "every reply in full character, whatever the message"),
        ]
        if app.training_running:
            out.append(("Cancel training", app.action_cancel_training, "stop at the next step, keep a checkpoint"))
        if session is None:
            return out
        persona_keys = {pid: key for key, pid in hotkeys(session.personas).items()}  # the working ones, as the bar
        for p in session.personas:
            key = persona_keys.get(p.id)
            out.append((f"Persona: {p.name}", partial(app.action_persona, p.id),
                        f"switch persona{f' ({key})' if key else ''}"))
        active = {i for i, _ in session.stack}
        for e in fitting_adapters(session):
            out.append((f"Adapters: {e.id} ({e.kind})", partial(app.use_stack, [e.id]),
                        f"{'active · ' if e.id in active else ''}only this one (and what it was trained over) until "
                        "automatic or a persona switch; ctrl+v adds your voice"))
        if session.ready:
            out.append(("Adapters: none (base model)", partial(app.use_stack, []), "no adapters, whatever the message"))
            out.append(("Adapters: automatic (router)", partial(app.use_stack, None),
                        "back to the persona's adapters and the voice toggle, else the router's pick per message"))
        for name in known_users(session):
            if name != session.user:
                out.append((f"Switch user: {name}", partial(app.action_switch_user, name), "a new session as them"))
        for info in session.recent_sessions():
            out.append((f"Resume session {info.id}", partial(app.action_resume, info.id),
                        session_line(info.path, info.modified)))
        return out

    async def discover(self) -> Hits:
        for name, command, help_text in self._commands():
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, command, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, text=name, help=help_text)
