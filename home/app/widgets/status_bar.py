"""One line under the chat: model, user, persona, adapter stack with scales, speed, context, memory."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

MODEL_WIDTH = 20  # long GGUF names would push the rest of the line off screen


class StatusBar(Static):
    """Rendered from reactives so any worker result updates it with a plain assignment."""

    model: reactive[str] = reactive("loading model…")
    user: reactive[str] = reactive("")
    persona: reactive[str] = reactive("none")
    stack: reactive[str] = reactive("base")
    tok_per_s: reactive[float | None] = reactive(None)
    ctx_used: reactive[int] = reactive(0)
    n_ctx: reactive[int] = reactive(0)
    memory: reactive[str] = reactive("–")  # "N used · M items", "off", or "–" while it opens
    mode: reactive[str] = reactive("")  # a pinned reply mode ("focused", "character"); "" when automatic

    def render(self) -> str:
        speed = f"{self.tok_per_s:.0f} tok/s" if self.tok_per_s else "– tok/s"
        model = self.model if len(self.model) <= MODEL_WIDTH else self.model[: MODEL_WIDTH - 1] + "…"
        ctx = f"ctx {self.ctx_used}/{self.n_ctx}" if self.n_ctx else "ctx –"
        mode = [f"mode {self.mode} (pinned)"] if self.mode else []
        return " │ ".join([model, f"user {self.user}", f"persona {self.persona}", *mode, f"adapters {self.stack}",
                             speed, ctx, f"memory {self.memory}"])

    @staticmethod
    def format_stack(stack: list[tuple[str, float]]) -> str:
        return " + ".join(f"{i}×{s:g}" for i, s in stack) if stack else "base"
