"""A modal listing the manifest's adapters: what each is, its default scale, and whether training
helped (held-out perplexity of the base model → with the adapter)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from vault.manifest import Manifest


def perplexity(metrics: dict) -> str:
    ppl = metrics.get("perplexity") or {}
    base, adapter = ppl.get("base"), ppl.get("adapter")
    if isinstance(base, int | float) and isinstance(adapter, int | float):
        return f"{base:.2f} → {adapter:.2f}"
    return "–"


class AdaptersScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, manifest: Manifest, active: list[tuple[str, float]]) -> None:
        super().__init__()
        self.manifest = manifest
        self.active = dict(active)

    def compose(self) -> ComposeResult:
        with Vertical(id="adapters-box"):
            yield Static("Adapters (Esc closes)", id="adapters-title")
            yield DataTable(id="adapters-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("id", "kind", "scale", "active", "perplexity base→adapter", "owner")
        for e in self.manifest.adapters.values():
            active = f"{self.active[e.id]:g}" if e.id in self.active else ""
            table.add_row(e.id, e.kind, f"{e.scale:g}", active, perplexity(e.metrics), e.owner or "")
        if not self.manifest.adapters:
            self.query_one("#adapters-title", Static).update(
                "No adapters registered yet: `home train` or `home adapters add` (Esc closes)")
