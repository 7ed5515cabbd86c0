"""The command palette (ctrl+p): everything that is not worth a key of its own.

One Provider: its commands are built fresh each time the palette opens, so new personas and sessions
appear without restarting.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from home.app.features import known_users


class HomeCommands(Provider):
    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        session = app.session  # type: ignore[attr-defined]
        out: list[tuple[str, Callable[[], object], str]] = [
            ("New session", app.action_new_chat, "start a fresh conversation log"),
            ("Export session as Markdown", app.action_export, "write <vault>/logs/<session>.md"),
            ("View adapters", app.action_adapters, "the registered adapters and their metrics"),
            ("Persona: base (no persona)", partial(app.action_persona, ""), "the model's own manner"),
            ("Retrain my voice", app.action_retrain, "train your voice adapter on your chat logs (ctrl+t)"),
            ("Roundtable…", app.action_roundtable, "two or more personas take turns on a topic; you can interject"),
            ("Pick best of two replies", app.action_pick_best,
             "two candidates for your last message side by side; your pick is kept as a preference (ctrl+b)"),
            ("Search past sessions", app.action_search, "full text over every session's log; open one to resume (ctrl+f)"),
            ("Switch user…", app.action_switch_user, "pick a user or type a new name; logs and voice follow"),
        ]
        if app.training_running:
            out.append(("Cancel training", app.action_cancel_training, "stop at the next step, keep a checkpoint"))
        if session is None:
            return out
        for p in session.personas:
            key = p.home.get("hotkey")
            out.append((f"Persona: {p.name}", partial(app.action_persona, p.id),
                        f"switch persona{f' ({key})' if key else ''}"))
        for name in known_users(session):
            if name != session.user:
                out.append((f"Switch user: {name}", partial(app.action_switch_user, name), "a new session as them"))
        for sid in session.recent_sessions():
            out.append((f"Resume session {sid}", partial(app.action_resume, sid), "load its history"))
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
