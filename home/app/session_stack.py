"""ChatSession's stack choice: persona, voice adapter (on/off, scale), a manual pick and the user, and
the stack they resolve to. A mixin so session.py keeps to the chat's state, engine and turns; everything
here holds `_state` for microseconds and never waits for the engine."""

from __future__ import annotations

from home.stack import Stack, StackSpec, persona_specs, resolve_stack

VOICE_STEP = 0.1
VOICE_RANGE = (0.0, 2.0)


class StackMixin:
    def voice_adapter(self) -> str | None:
        """The user's voice adapter id from the manifest (users[user].voice_adapter), if any."""
        user = self.manifest().users.get(self.user) or {}
        return user.get("voice_adapter") or None

    def toggle_voice(self) -> bool | None:
        """Flip the voice adapter on top of the persona's stack; None when the user has none."""
        if self.voice_adapter() is None:
            return None
        with self._state:
            self.voice_on = not self.voice_on
            try:
                self._stack = self.compute_stack()
            except BaseException:
                self.voice_on = not self.voice_on
                raise
            return self.voice_on

    def nudge_voice(self, delta: float) -> float | None:
        voice = self.voice_adapter()
        if voice is None:
            return None
        with self._state:
            before = self.voice_scale
            current = before if before is not None else self.manifest().adapter(voice).scale
            low, high = VOICE_RANGE
            self.voice_scale = round(min(high, max(low, current + delta)), 2)
            try:
                self._stack = self.compute_stack()
            except BaseException:
                self.voice_scale = before
                raise
            return self.voice_scale

    def set_manual(self, specs: list[StackSpec] | None) -> Stack:
        """Pick the stack by hand (`[]`: the base model) or give the choice back (None). A manual pick
        replaces the persona's adapters and turns the voice adapter off (ctrl+v then adds it on top);
        it lasts until `set_manual(None)` or a persona switch. AdapterError (nothing changed) if a picked
        adapter does not fit the loaded model."""
        with self._state:
            before = self.manual, self.voice_on
            self.manual = None if specs is None else list(specs)
            if specs is not None:
                self.voice_on = False
            try:
                self._stack = self.compute_stack()
            except BaseException:
                self.manual, self.voice_on = before
                raise
            return list(self._stack)

    def set_user(self, name: str) -> Stack:
        """Talk as `name`: their voice adapter (at its own scale) from now on. Nothing changes if the
        stack cannot be resolved for them."""
        with self._state:
            before = self.user, self.voice_scale
            self.user, self.voice_scale = name, None
            try:
                self._stack = self.compute_stack()
            except BaseException:
                self.user, self.voice_scale = before
                raise
            return list(self._stack)

    def drop_manual(self, removed: set[str] | list[str]) -> bool:
        """(Hot-unload.) A manual stack that names a removed adapter ends; True if it did."""
        with self._state:
            if self.manual is None or not {s.id for s in self.manual} & set(removed):
                return False
            self.manual = None
            return True

    def explicit_specs(self) -> list[StackSpec] | None:
        """What the user chose by hand: the manual stack, else the persona's adapters, plus the voice
        adapter when it is on. None: nothing chosen, so the router picks per message (the voice toggle
        off means "router's call"); a manual stack is a choice even when empty (the base model)."""
        with self._state:
            manual, persona, voice_on, scale = self.manual, self.persona, self.voice_on, self.voice_scale
        specs = list(manual) if manual is not None else persona_specs(persona)
        voice = self.voice_adapter() if voice_on else None
        if voice:
            specs = [s for s in specs if s.id != voice] + [StackSpec(voice, scale)]
        return specs if manual is not None else (specs or None)

    def compute_stack(self) -> Stack:
        """The explicit stack checked against the model; [] when the router will choose at the next turn."""
        specs = self.explicit_specs() or []
        if self.engine is None:
            return [(s.id, s.scale if s.scale is not None else 1.0) for s in specs]
        info = self.engine.info
        return resolve_stack(self.manifest(), specs, info.fingerprint, info.name)
