"""F12's panel: every key, Home's own first.

Textual's keys panel lists the focused widget's bindings first. In the chat that is the prompt, a TextArea
with some forty editing keys (cursor, select, delete), so a new user pressing F12 saw only those: Home's
keys (personas, memory, retrain, search, copy) were below the bottom of the terminal. This is the same
panel with the groups reordered (the app's and the screen's first, titled "Home") and rendered as
Textual renders them. Built on public widgets only (Static, KeyPanel, HelpPanel): Textual's own table is
in a private module, which an upgrade within `textual>=8` may move, and the app must not fail to start.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby
from operator import itemgetter

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.widgets import HelpPanel, KeyPanel, Markdown, Static

HOME_TITLE = "Home"


class HomeBindingsTable(Static):
    """The bindings table: Textual's component classes and styles, Home's groups first."""

    COMPONENT_CLASSES = {
        "bindings-table--key",
        "bindings-table--description",
        "bindings-table--divider",
        "bindings-table--header",
    }
    DEFAULT_CSS = """
    HomeBindingsTable {
        width: auto;
        height: auto;
    }
    """

    def render(self) -> Table:
        return self.render_bindings_table()

    def render_bindings_table(self) -> Table:
        groups = [(ns, list(b)) for ns, b in groupby(self.screen.active_bindings.values(), key=itemgetter(0))]
        home = [g for g in groups if isinstance(g[0], App | Screen)]
        rest = [g for g in groups if not isinstance(g[0], App | Screen)]
        transparent = self.get_component_styles("bindings-table--divider").color.a == 0
        table = Table(padding=(0, 0), show_header=False, box=box.SIMPLE if transparent else box.HORIZONTALS,
                      border_style=self.get_component_rich_style("bindings-table--divider"))
        table.add_column("", justify="right")
        merged = [(HOME_TITLE, [b for _, bs in home for b in bs])] if home else []
        for title, bindings in merged + [(ns.BINDING_GROUP_TITLE, bs) for ns, bs in rest]:
            self._add_group(table, title, bindings)
            table.add_section()
        return table

    def _add_group(self, table: Table, title: str | None, bindings: list) -> None:
        """One titled group: each action once, with all its keys (as Textual does)."""
        if title:
            table.add_row("", Text(title, style=self.get_component_rich_style("bindings-table--header"), end=""))
        by_action: defaultdict[str, list] = defaultdict(list)
        for _, binding, _enabled, _tooltip in bindings:
            if not binding.system:
                by_action[binding.action].append(binding)
        key_style = self.get_component_rich_style("bindings-table--key")
        description_style = self.get_component_rich_style("bindings-table--description")
        for same in by_action.values():
            keys = " ".join(dict.fromkeys(self.app.get_key_display(b) for b in same))
            text = Text.from_markup(same[0].description, end="", style=description_style)
            if same[0].tooltip:
                text.append((" " if same[0].description else "") + same[0].tooltip, "dim")
            table.add_row(Text(keys, style=key_style), text)


class HomeKeyPanel(KeyPanel, can_focus=False):
    # KeyPanel styles its table by Textual's private class name: the same rules for ours
    DEFAULT_CSS = """
    HomeKeyPanel {
        &> HomeBindingsTable > .bindings-table--key {
            color: $text-accent;
            text-style: bold;
            padding: 0 1;
        }
        &> HomeBindingsTable > .bindings-table--description {
            color: $foreground;
        }
        &> HomeBindingsTable > .bindings-table--divider {
            color: transparent;
        }
        &> HomeBindingsTable > .bindings-table--header {
            color: $text-primary;
            text-style: underline;
        }
    }
    """

    def compose(self) -> ComposeResult:
        yield HomeBindingsTable(shrink=True, expand=False)


class HomeHelpPanel(HelpPanel):
    """Textual's HelpPanel (F12 toggles it by its name) with the reordered keys."""

    def compose(self) -> ComposeResult:
        yield Markdown(id="widget-help")
        yield HomeKeyPanel(id="keys-help")
