"""Generation parameters: one small value object shared by the config, personas and the engine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenParams:
    """Sampling settings. temperature 0 is greedy; seed -1 draws a fresh random seed per reply."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    seed: int = -1
    max_tokens: int = 512
    stop: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        # Accept a list (from TOML/JSON) or a single string for `stop`, store an immutable tuple.
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        object.__setattr__(self, "stop", tuple(s for s in (stop or ()) if s))
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: expected at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature: expected >= 0, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the conversation log records it with each reply)."""
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d

    def merged(self, **overrides: Any) -> GenParams:
        """A copy with the given fields replaced; None means "keep mine" so layers can pass everything."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
