"""The router: one decision per turn, from who is talking, the persona, and the message's task and tone.

Explicit choices always win (a persona card's adapters, `--adapter`, `--no-adapters`): the router then
only records what it would have picked. Otherwise the candidates are scored from the manifest
(home/router/score.py) and the stack is validated exactly like a hand-made one (home.stack.resolve_stack:
base fingerprint, dependencies beneath). Nothing fits → the base model. Cost per turn: one embedding and
a few small numpy products; the classifiers are built once per vault and embedder (classify.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from home.router.classify import Classifier, Prediction, label_examples, load_classifiers
from home.router.mode import Mode, apply_mode, choose_mode, persona_adapters
from home.router.score import Candidate, choose, score_candidates, stack_order
from home.stack import Stack, StackSpec, persona_specs, resolve_stack
from llm.errors import AdapterError
from vault.config import Config, RouterSettings
from vault.layout import Vault
from vault.manifest import Manifest


@dataclass(frozen=True)
class Decision:
    stack: Stack  # [(adapter_id, scale)], dependencies included, ready for home.stack.activate
    task: tuple[str, float]  # (label, confidence)
    tone: tuple[str, float]
    candidates: tuple[Candidate, ...]
    reason: str
    explicit: bool = False
    task_probs: dict | None = None
    tone_probs: dict | None = None
    ms: float = 0.0  # time spent deciding (classification + scoring)
    mode: Mode | None = None  # focused or character (home/router/mode.py): the stack's scales include it

    def to_dict(self) -> dict:
        """What the turn's log record keeps under "router" (JSON-able)."""
        return {
            "task": {"label": self.task[0], "confidence": self.task[1], "probs": self.task_probs or {}},
            "tone": {"label": self.tone[0], "confidence": self.tone[1], "probs": self.tone_probs or {}},
            "candidates": [c.to_dict() for c in self.candidates],
            "chosen": [{"id": i, "scale": s} for i, s in self.stack],
            "reason": self.reason,
            "explicit": self.explicit,
            "ms": round(self.ms, 2),
            "mode": self.mode.to_dict() if self.mode else None,
        }


def explicit_choice(persona=None, adapters: Sequence[str] = (), no_adapters: bool = False) -> list[StackSpec] | None:
    """What the user chose by hand, which the router never overrides; None when nothing was chosen.

    `--no-adapters` → [] (the base model); `--adapter ID[:SCALE]` flags; else a persona card's
    `extensions.home.adapters` (its hotkey's stack)."""
    if no_adapters:
        return []
    if adapters:
        return [StackSpec.parse(a) for a in adapters]
    return persona_specs(persona) or None


class Router:
    """Built once per process (`Router.load`), then `decide` per turn; safe to share between turns."""

    def __init__(self, settings: RouterSettings, embedder, task: Classifier, tone: Classifier,
                 vault_root: Path | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.task_classifier = task
        self.tone_classifier = tone
        self.vault_root = vault_root

    @classmethod
    def load(cls, vault: Vault, config: Config, embedder=None) -> Router:
        """The vault's router. `embedder` None → the memory's configured one (default MiniLM).

        Bad router settings raise `ConfigError` naming config.toml and the field (exit 2)."""
        settings = config.router
        tasks, tones = label_examples(settings, str(vault.config_path))
        if embedder is None:
            from vault.embedder import load_embedder

            embedder = load_embedder(config.memory.embedder or None)
        # <vault>/router/ holds derived data only (the centroid cache): deleting it is always safe.
        task, tone = load_classifiers(vault.root / "router", embedder, tasks, tones)
        router = cls(settings, embedder, task, tone, vault.root)
        router.classify("warm up")  # the first embedding pays a one-off ~0.3 s; not the first turn's
        return router

    def classify(self, text: str, vector: np.ndarray | None = None) -> tuple[Prediction, Prediction]:
        vec = self.embedder.embed([text])[0] if vector is None else vector
        return self.task_classifier.classify(vec), self.tone_classifier.classify(vec)

    def decide(self, manifest: Manifest, *, user: str, persona=None, text: str,
               explicit: list[StackSpec] | None = None, model_fingerprint: str, model_name: str,
               vector: np.ndarray | None = None, mode: str | None = None) -> Decision:
        """The adapter stack for this turn and why. `persona`: a vault.personas.Persona, its id, or None.
        `vector`: the message's embedding by this router's embedder, when the caller already has it (memory
        search embeds the same text): then deciding costs well under a millisecond.

        An explicit choice that names an unknown adapter or one made for another base raises
        `AdapterError` (exit 3), as `home ask --adapter` does; the router's own picks never do.
        `mode`: a pinned mode (focused/character); None or "auto" → the task's (home/router/mode.py). The
        mode's factor multiplies the persona's adapters' scales in the returned stack, explicit or not."""
        started = time.perf_counter()
        persona_id = getattr(persona, "id", persona) or None
        task, tone = self.classify(text, vector)
        scored = score_candidates(manifest, user=user, persona=persona_id, task=task, tone=tone,
                                  model_fingerprint=model_fingerprint, model_name=model_name,
                                  settings=self.settings, vault_root=self.vault_root)
        if explicit is not None:
            stack = resolve_stack(manifest, list(explicit), model_fingerprint, model_name)
            shown = ", ".join(f"{i}:{s:g}" for i, s in stack) or "no adapters (the base model)"
            candidates, reason = scored, f"explicit choice wins: {shown}"
        elif not self.settings.enabled:
            stack, candidates = [], scored
            reason = "router disabled (config.toml [router] enabled = false): the base model"
        else:
            candidates = self._loadable(manifest, choose(scored, self.settings), model_fingerprint, model_name)
            picked = stack_order(candidates)
            stack = resolve_stack(manifest, [StackSpec(c.id) for c in picked], model_fingerprint, model_name)
            reason = _reason(picked, stack, user, persona_id, task, tone)
        chosen_mode = choose_mode(persona if hasattr(persona, "home") else None, task.label, task.confidence,
                                  mode, user, text)
        stack, chosen_mode = apply_mode(chosen_mode, stack, persona_adapters(manifest, persona)
                                        if hasattr(persona, "home") else set())
        return Decision(stack, (task.label, task.confidence), (tone.label, tone.confidence), tuple(candidates),
                        reason, explicit is not None, task.probs, tone.probs,
                        (time.perf_counter() - started) * 1000, chosen_mode)


    def _loadable(self, manifest: Manifest, candidates: list[Candidate], fingerprint: str,
                  model_name: str) -> list[Candidate]:
        """Un-choose a pick whose dependencies (its entry's `stack`) cannot load: the router's own picks
        must never fail a turn."""
        out = []
        for c in candidates:
            if c.chosen:
                try:
                    deps = resolve_stack(manifest, [StackSpec(c.id)], fingerprint, model_name)
                    missing = [i for i, _ in deps if self.vault_root is not None
                               and not (self.vault_root / manifest.adapters[i].file).is_file()]
                    if missing:
                        raise AdapterError(f"file of {', '.join(missing)} is missing from the vault")
                except AdapterError as exc:
                    c = replace(c, score=None, chosen=False, why=f"its stack cannot load: {exc}")
            out.append(c)
        return out


def _reason(picked: list[Candidate], stack: Stack, user: str, persona: str | None, task: Prediction,
            tone: Prediction) -> str:
    who = f"user {user}" + (f", persona {persona}" if persona else "")
    msg = f"task {task.label} {task.confidence:.2f}, tone {tone.label} {tone.confidence:.2f}"
    if not picked:
        return f"no adapter fits {who}, {msg}: the base model"
    chosen = "; ".join(f"{c.id} ({c.kind}: {c.why})" for c in picked)
    extra = [i for i, _ in stack if all(c.id != i for c in picked)]
    deps = f"; beneath them, as they were trained: {', '.join(extra)}" if extra else ""
    return f"{who}, {msg} → {chosen}{deps}"
