"""One line under the chat: model, user, persona, adapter stack with scales, speed, context, memory."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

MODEL_WIDTH = 20  # long GGUF names would push the rest of the line off screen
KEEP = 9  # parts ranked below this leave a narrow line in rank order (speed, model, context) rather than
# the line's end being cut: at 80 columns memory and context were off screen


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
        mode = [(f"mode {self.mode} (pinned)", KEEP)] if self.mode else []
        parts = [(model, 2 if self.n_ctx else KEEP),  # "loading model…" stays until it is loaded
                 (f"user {self.user}", KEEP), (f"persona {self.persona}", KEEP), *mode,
                 (f"adapters {self.stack}", KEEP), (speed, 1), (ctx, 3), (f"memory {self.memory}", KEEP)]
        width = self.content_size.width or 10**6  # 0 before the first layout: everything
        while len(" │ ".join(text for text, _ in parts)) > width and min(rank for _, rank in parts) < KEEP:
            parts.remove(min(parts, key=lambda part: part[1]))  # the least needed goes first
        return " │ ".join(text for text, _ in parts)

    @staticmethod
    def format_stack(stack: list[tuple[str, float]]) -> str:
        return " + ".join(f"{i}×{s:g}" for i, s in stack) if stack else "base"
