"""The chat's state without any widgets: vault, config, persona, voice adapter, stack, conversation.

Kept apart from the screens so the rules (which stack a turn gets, what regenerate pops, where an
export goes) are plain Python that the CLI, the app and a benchmark can all drive the same way.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from home.app.draft import DraftVectors
from home.app.session_memory import MemoryMixin
from home.app.session_stack import StackMixin
from home.context import Context
from home.generation import generation_params
from home.hotload import SyncReport, sync_adapters
from home.stack import Stack, StackSpec, activate, upgrade_fingerprints
from home.turn import Conversation
from llm.errors import LLMError
from llm.params import GenParams
from vault.fsio import atomic_write_text
from vault.logs import ConversationLog, SessionInfo, list_sessions
from vault.manifest import Manifest
from vault.personas import Persona, get_persona, list_personas

if TYPE_CHECKING:
    from home.recall import Recall
    from home.router import Router

@dataclass
class AppOptions:
    """What the CLI (or a test) decides before the app starts; None means "from config.toml"."""

    vault: str | Path | None = None
    model: str | Path | None = None
    user: str | None = None
    persona: str | None = None
    max_tokens: int | None = None
    n_ctx: int | None = None
    gpu_layers: int | None = None
    backend: str | None = None  # a llama-server URL (`home --backend`); None: config [backend] url
    temperature: float | None = None
    seed: int | None = None
    resume: str | None = None  # `home chat --continue`: the session the chat opens on (its history shown)
    train_steps: int | None = None
    """Retrain overrides (tests): optimizer steps, and any other trainer.protocol.job.Job fields."""
    train_args: dict | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AppOptions:
        return cls(**{k: getattr(args, k, None) for k in cls.__dataclass_fields__})


class ChatSession(StackMixin, MemoryMixin):
    """One window's chat. Methods that touch the engine lock (`load`, `apply_stack`, `send`,
    `follow_manifest`) are called from worker threads, except `apply_stack` of an already loaded stack
    while no reply runs (then it is only a sub-millisecond `set_adapters`); everything else is cheap on
    the UI thread.

    Two locks, always taken in this order: `turn_lock` (the engine's stack for a whole reply or
    background call) and `_state` (what decides the stack: `stack`, `manual`, `voice_on`, `voice_scale`,
    `persona`, `user`). `_state` is written from the UI thread, the watcher's thread and the turn's, and
    held for microseconds, never while waiting for the engine."""

    def __init__(self, options: AppOptions) -> None:
        self.options = options
        self.ctx = Context(argparse.Namespace(vault=options.vault and str(options.vault),
                                              model=options.model and str(options.model), user=options.user,
                                              gpu_layers=options.gpu_layers, backend=options.backend))
        self.vault = self.ctx.vault
        self.config = self.ctx.config
        self.user: str = self.ctx.user
        self.persona_errors: list[str] = []
        self.personas: list[Persona] = list_personas(self.vault, self.persona_errors)
        name = options.persona or self.config.persona
        self.persona: Persona | None = get_persona(self.vault, name) if name else None
        self.engine = None
        self.conversation: Conversation | None = None
        self.opening: list[dict] = []  # the records the chat opened with: a resumed session's, or the greeting
        self.voice_on = False
        self.voice_scale: float | None = None  # None: the adapter's own scale from the manifest
        self.mode_pin = "auto"  # dual mode: "auto" (the router's task class decides), "focused" or "character"
        self.manual: list[StackSpec] | None = None
        """A stack picked by hand in the palette ([] = the base model); None: persona, voice and router
        decide. It replaces the persona's adapters until "automatic" is picked or the persona changes."""
        self._stack: Stack = []
        self._state = threading.RLock()
        # Held for a whole reply and for each background model call (gestalt distillation), so the
        # engine's adapter stack is never changed under one of them; the UI thread only try-locks it.
        self.turn_lock = threading.RLock()
        self.distil_cancel = threading.Event()  # set by a reply that wants the engine now
        self.on_session_end: Callable[[str, Path], None] | None = None  # (session id, its log): read off this thread
        self._manifest: tuple[tuple | None, Manifest] | None = None  # (file identity, parsed)
        self.recall: Recall | None = None  # memory, once `open_memory` ran (after the model loaded)
        self.router: Router | None = None  # per-turn adapter choice, loaded with memory
        self.memory_items: int | None = None
        self.memory_note: str | None = None  # why memory is off, when it is
        self.router_note: str | None = None  # why the router is off, when it could not load
        self.drafts = DraftVectors(self.draft_vectors)  # the prompt box's text embedded while the user types

    # --- model and conversation ---------------------------------------------------------------

    def load(self) -> None:
        """Resolve and load the model (seconds; a worker thread). ModelError if it cannot."""
        self.engine = self.ctx.backend(n_ctx=self.options.n_ctx)
        upgrade_fingerprints(self.vault, self.engine.info)  # adapters registered under the v1 fingerprint
        self.opening = self.new_conversation(self.options.resume)
        self.refresh_stack()
        self.apply_stack()

    @property
    def stack(self) -> Stack:
        """The stack the next reply gets (a copy: change it by assigning)."""
        with self._state:
            return list(self._stack)

    @stack.setter
    def stack(self, value: Stack) -> None:
        with self._state:
            self._stack = list(value)

    def refresh_stack(self) -> Stack:
        """Recompute the stack from the persona, voice and manual choice (e.g. a new voice adapter)."""
        with self._state:
            self._stack = self.compute_stack()
            return list(self._stack)

    def new_conversation(self, session_id: str | None = None) -> list[dict]:
        """A fresh session, or an existing one resumed with its history; returns its chat records."""
        ending = self.conversation
        if ending is not None and ending.last is not None and self.on_session_end is not None:
            self.on_session_end(ending.log.session, ending.log.path)
        if ending is not None and ending.last is not None and self.recall is not None:
            self.recall.session_ended(ending.log.session)  # its summary, with `[memory] summaries` on
        if session_id is None:
            log, history, records = ConversationLog.create(self.vault), [], []
        else:
            log = ConversationLog.open(self.vault, session_id)
            records = [r for r in log.records() if r.get("role") in ("user", "assistant")]
            history = [{"role": r["role"], "content": r.get("text", ""), **({"greeting": True} if r.get("greeting") else {})}
                       for r in records if not r.get("partial")]
        self.conversation = Conversation(self.engine, log, self.user, self.persona, history, recall=self.recall)
        if session_id is None:  # a new chat opens with the persona's greeting, when its card has one
            text = self.conversation.greet()
            if text is not None:
                records = [{"role": "assistant", "persona": self.persona.id, "text": text, "greeting": True}]
        return records

    def greet(self) -> str | None:
        """After a persona switch: the new persona's greeting when the user has not spoken in this chat yet."""
        with self._state:
            return self.conversation.greet() if self.conversation is not None else None

    def recent_sessions(self, limit: int = 20) -> list[SessionInfo]:
        return list_sessions(self.vault)[:limit]

    @property
    def ready(self) -> bool:
        return self.conversation is not None

    # --- persona, voice, stack ----------------------------------------------------------------

    def set_persona(self, persona: Persona | None) -> Stack:
        """Switch who speaks; the model stays loaded. Returns the stack the next reply will use. A stack
        picked by hand ends here: the new persona's own adapters apply."""
        with self._state:
            before = self.persona, self.manual
            self.persona, self.manual = persona, None
            try:
                self._stack = self.compute_stack()
            except BaseException:
                self.persona, self.manual = before
                raise
            if self.conversation is not None:
                self.conversation.persona = persona
            return list(self._stack)

    def persona_by_id(self, pid: str | None) -> Persona | None:
        return next((p for p in self.personas if p.id == pid), None) if pid else None

    def manifest(self) -> Manifest:
        """The manifest, parsed again only when the file changed. A persona switch reads it up to three
        times (stack, voice, activation); a stat is microseconds, a parse and validation is not. Writers
        replace the file atomically (a new inode), so (inode, mtime, size) names one version."""
        try:
            st = self.vault.manifest_path.stat()
            key: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        cached = self._manifest
        if cached is not None and cached[0] == key:
            return cached[1]
        manifest = self.ctx.manifest()
        self._manifest = (key, manifest)
        return manifest

    def apply_stack(self, blocking: bool = True) -> Stack | None:
        """Load (once) and activate the current stack on the engine; waits for a running reply or
        background call, or with `blocking=False` returns None at once when one holds the engine."""
        if not self.turn_lock.acquire(blocking=blocking):
            return None
        try:
            stack = self.stack  # read once the engine is ours: stacks set one after another apply in order
            activate(self.engine, self.vault, self.manifest(), stack)
            return stack
        finally:
            self.turn_lock.release()

    def follow_manifest(self, managed: set[str]) -> tuple[SyncReport, bool]:
        """(The watcher's thread.) Load new adapters, reload replaced files, unload removed ones, and
        if the stack lost one, fall back to what the persona can still have. Under the turn lock: a
        reload waits for the reply in progress, and no reply starts between its unload and its load.
        Returns the report and whether a manual stack ended."""
        with self.turn_lock:
            report = sync_adapters(self.engine, self.vault, self.manifest(), managed)
            dropped = self.drop_manual(report.unloaded)
            with self._state:
                lost = bool({i for i, _ in self._stack} & set(report.unloaded))
                if lost:
                    try:
                        self._stack = self.compute_stack()
                    except LLMError:
                        self._stack = []
            if lost:
                self.apply_stack()
        return report, dropped

    def stack_loaded(self) -> bool:
        """Every adapter of the current stack is already on the engine: activating it is only a
        `set_adapters` (sub-millisecond), cheap enough for the UI thread."""
        loaded = self.engine.loaded_adapters if self.engine is not None else {}
        return all(i in loaded for i, _ in self.stack)

    # --- turns --------------------------------------------------------------------------------

    def params(self) -> GenParams:
        o = self.options
        return generation_params(self.ctx, self.persona, argparse.Namespace(
            temperature=o.temperature, top_p=None, top_k=None, repeat_penalty=None,
            max_tokens=o.max_tokens, seed=o.seed))

    @contextmanager
    def engine_turn(self) -> Iterator[None]:
        """Hold the engine for one reply (a chat turn, a roundtable turn, a pick-best candidate): a
        background distillation gives way (it stops after its current model call, ≤ ~1 s, and resumes
        later), and nothing changes the adapter stack until the reply is over."""
        self.distil_cancel.set()
        with self.turn_lock:
            self.distil_cancel.clear()
            yield

    def send(self, text: str, cancel: threading.Event) -> Iterator[str]:
        """One turn on the current persona and stack (worker thread); Conversation logs it."""
        with self.engine_turn():
            decision = None
            vectors = self.drafts.take(text)  # typed, then a pause before Enter: embedded already
            if self.router is not None:
                explicit = self.explicit_specs()
                info = self.engine.info
                if vectors is None:
                    from home.recall import turn_vectors

                    vectors = turn_vectors(self.router.embedder, text, self.conversation.recall)
                decision = self.router.decide(self.manifest(), user=self.user, persona=self.persona, text=text,
                                              explicit=explicit, model_fingerprint=info.fingerprint,
                                              model_name=info.name, vector=vectors[text], mode=self.mode_pin)
                with self._state:
                    if self.explicit_specs() is None:  # still the router's call (the UI may have chosen meanwhile)
                        self._stack = list(decision.stack)
            stack = self.apply_stack()
            if decision is not None and decision.explicit and explicit == self.explicit_specs():
                # The same hand-made stack with this turn's mode factor on the persona's adapters: this
                # turn only, so the status bar and the next turn start from the stack as chosen.
                stack = list(decision.stack)
            yield from self.conversation.send(text, self.params(), stack, cancel=cancel,
                                              router=decision.to_dict() if decision else None, query_vectors=vectors)

    def draft_vectors(self, text: str) -> dict | None:
        """(A worker thread.) What a turn saying `text` would embed (`home.recall.turn_vectors`), for
        `drafts`; None while no embedder is loaded (the router and memory open after the model)."""
        recall = self.recall
        store = recall.store if recall is not None else None
        embedder = self.router.embedder if self.router is not None else (store.embedder if store else None)
        if embedder is None:
            return None
        from home.recall import turn_vectors

        return turn_vectors(embedder, text, recall)

    def pop_last_exchange(self) -> str | None:
        """For regenerate: drop the last user/assistant pair from the model's history and return the
        user text to send again. The log keeps both; the new turn logs a fresh user record."""
        history = self.conversation.history if self.conversation else []
        if len(history) < 2 or history[-2]["role"] != "user":
            return None
        text = history[-2]["content"]
        del history[-2:]
        return text

    @property
    def tok_per_s(self) -> float | None:
        last = self.engine.last if self.engine else None
        return last.tok_per_s if last else None

    @property
    def context_used(self) -> int:
        last = self.engine.last if self.engine else None
        return (last.prompt_tokens + last.completion_tokens) if last else 0

    def export_markdown(self) -> Path:
        """Write the session as Markdown beside its log (`<vault>/logs/<session>.md`, 0600)."""
        log = self.conversation.log
        lines = [f"# Session {log.session}", ""]
        for r in log.records():
            if r.get("role") not in ("user", "assistant"):
                continue
            who = r.get("user") if r["role"] == "user" else (r.get("persona") or "home")
            stopped = " (stopped)" if r.get("partial") else ""
            lines += [f"**{who}**{stopped} — {r.get('time', '')}", "", r.get("text", ""), ""]
        path = log.path.with_suffix(".md")
        atomic_write_text(path, "\n".join(lines))
        return path
