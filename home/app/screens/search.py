"""Search past sessions: type words, see matching turns (session, time, who, snippet); Enter or a click
on one resumes its session. The scan (vault/search.py) runs on a thread worker per query, so typing
never waits for it; a result that arrives for an older query is dropped."""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from vault.layout import Vault
from vault.search import SearchHit, SearchResult, search_logs

LIMIT = 100
DEBOUNCE_S = 0.12


def hit_prompt(hit: SearchHit) -> Text:
    """Two lines: where and who, then the snippet with the terms highlighted."""
    when = hit.time.replace("T", " ")[:16]
    text = Text()
    text.append(f"{hit.session}", style="bold")
    text.append(f"  {when}  {hit.who}\n", style="dim")
    snippet = Text(hit.snippet)
    for start, end in hit.spans:
        snippet.stylize("bold reverse", start, end)
    text.append_text(snippet)
    return text


class SearchScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("down", "focus_results", show=False)]

    def __init__(self, vault: Vault, query: str = "") -> None:
        super().__init__()
        self.vault = vault
        self.initial = query
        self.result: SearchResult | None = None
        """The last result shown (tests read it)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="search-box"):
            yield Static("Search past sessions (Enter opens the top hit, ↓ the list, Esc closes)", id="search-title")
            yield Input(self.initial, placeholder="words to find, \"a phrase\"", id="search-input")
            yield Static("", id="search-status", markup=False)
            yield OptionList(id="search-results")

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        if self.initial:
            self._search(self.initial)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._search(event.value)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _search(self, query: str) -> None:
        time.sleep(DEBOUNCE_S)  # a word typed quickly scans once, not once per letter
        if get_current_worker().is_cancelled:
            return
        result = search_logs(self.vault, query, limit=LIMIT)
        self.app.call_from_thread(self._show, result)

    def _show(self, result: SearchResult) -> None:
        if result.query != self.query_one(Input).value:
            return  # typed on since: a newer search is coming
        self.result = result
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options([Option(hit_prompt(h), id=f"{i}") for i, h in enumerate(result.hits)])
        if not result.query.strip():
            status = f"{result.sessions} sessions"
        else:
            more = f" (first {LIMIT})" if result.truncated else ""
            status = (f"{len(result.hits)} matching turns{more} in {result.sessions} sessions · "
                      f"{result.elapsed_ms:.0f} ms")
        self.query_one("#search-status", Static).update(status)

    def _open(self, index: int) -> None:
        if self.result is not None and 0 <= index < len(self.result.hits):
            self.dismiss(self.result.hits[index].session)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._open(0)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._open(event.option_index)

    def action_focus_results(self) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            options.focus()
            options.highlighted = options.highlighted or 0
