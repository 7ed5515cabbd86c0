"""Generation with Home's own engine (llama.cpp, the default model or `home --model`): no network."""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import GenParams


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str  # "stop" | "length" | other (the endpoint's word)


class LocalGenerator:
    """`generator(messages, params) -> Reply` over an `llm.engine.Engine` (base model, no adapters)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.label = f"local:{engine.info.name}"

    def __call__(self, messages: list[dict], params: GenParams) -> Reply:
        self.engine.set_adapters([])
        text = self.engine.generate_text(messages, params)
        last = self.engine.last
        return Reply(text, last.finish_reason if last is not None else "stop")
