"""The memory panel: what the last reply used, a search over memory, the user's gestalts, the counts;
highlight an item and press Delete (or f) to forget it after a confirmation.

Reading and forgetting go through home/app/memory_view.py on thread workers (the store, the logs and
the gestalt files are never touched on the UI thread). Searching runs as the user types, after a short
debounce; a result that arrives for an older query is dropped. When memory is off or another process
owns it, the title says why and the gestalt files are still listed (and can be forgotten).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from home.app import memory_view as mv
from home.app.screens.confirm import ConfirmScreen
from llm.errors import LLMError
from vault.errors import VaultError

DEBOUNCE_S = 0.15
TEXT_CHARS = 400
HINT = "Type to search · ↓ to the list · Delete or f forgets the highlighted item · Esc back to the chat"


def entry_prompt(entry: mv.Entry) -> Text:
    """Two lines: what it is, when and its id (dim), then the text."""
    when = entry.when.replace("T", " ")[:16]
    text = Text()
    text.append(" · ".join(p for p in (entry.label, when, entry.id) if p) + "\n", style="dim")
    body = entry.text if len(entry.text) <= TEXT_CHARS else entry.text[: TEXT_CHARS - 1] + "…"
    text.append(body)
    return text


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def header(title: str) -> Option:
    return Option(Text(title, style="bold underline"), disabled=True)


class MemoryScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("down", "focus_list", show=False),
        Binding("delete,f", "forget", "Forget"),
    ]

    def __init__(self, session) -> None:  # noqa: ANN001
        super().__init__()
        self.session = session
        self.overview: mv.Overview | None = None
        """The last overview shown (tests read it)."""
        self.results: list[mv.Entry] | None = None
        self.results_for = ""
        """The query `results` answer ("" before any search)."""
        self.forgotten: list[str] = []
        """Ids forgotten from this panel, in order."""
        self.loads = 0
        """Overviews shown so far (one at opening, one after each forget)."""
        self._entries: dict[str, mv.Entry] = {}

    def compose(self) -> ComposeResult:
        yield Static("Memory", id="mem-title", markup=False)
        yield Input(placeholder="search your memory: words, or a question", id="mem-search")
        yield Static("", id="mem-status", markup=False)
        yield OptionList(id="mem-list")
        yield Static(HINT, id="mem-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self._load()

    # --- reading ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="memory-load", exit_on_error=False)
    def _load(self) -> None:
        try:
            overview = mv.load_overview(self.session)
        except (VaultError, LLMError, OSError) as exc:
            self.app.from_thread(self._status, f"memory: {exc}", error=True)
            return
        self.app.from_thread(self._show_overview, overview)

    def _show_overview(self, overview: mv.Overview) -> None:
        self.overview = overview
        self.loads += 1
        title = self.query_one("#mem-title", Static)
        if overview.counts is not None:
            c = overview.counts
            title.update(f"Memory · {plural(c['items'], 'item')} · {plural(c['gestalts'], 'gestalt')} · "
                         f"user {self.session.user}")
        else:
            title.update(f"Memory is off: {overview.note}")
        if overview.problems:
            self._status(f"{len(overview.problems)} gestalt file(s) do not parse, e.g. {overview.problems[0]}",
                         error=True)
        self._fill()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if not event.value.strip():
            self.results, self.results_for = None, ""
            self._fill()
            self._status("")
            return
        self._search(event.value)

    @work(thread=True, exclusive=True, group="memory-search", exit_on_error=False)
    def _search(self, query: str) -> None:
        time.sleep(DEBOUNCE_S)  # a word typed quickly searches once, not once per letter
        if get_current_worker().is_cancelled:
            return
        started = time.perf_counter()
        try:
            found = mv.search(self.session, query)
        except (VaultError, LLMError) as exc:
            self.app.from_thread(self._status, f"search: {exc}", error=True)
            return
        self.app.from_thread(self._show_results, query, found, (time.perf_counter() - started) * 1000)

    def _show_results(self, query: str, found: list[mv.Entry], ms: float) -> None:
        if query != self.query_one(Input).value:
            return  # typed on since: a newer search is coming
        self.results, self.results_for = found, query
        self._fill()
        note = mv.off_note(self.session)
        self._status(f"search needs memory: {note}" if note else f"{len(found)} found · {ms:.0f} ms")

    # --- the list ----------------------------------------------------------------------------

    def _fill(self) -> None:
        """Sections: search results (while there is a query), used by the last reply, gestalts."""
        options, self._entries = [], {}

        def section(key: str, title: str, entries: list[mv.Entry], empty: str) -> None:
            if options:
                options.append(None)  # a rule between sections
            options.append(header(f"{title} ({len(entries)})"))
            for i, entry in enumerate(entries):
                self._entries[f"{key}-{i}"] = entry
                options.append(Option(entry_prompt(entry), id=f"{key}-{i}"))
            if not entries:
                options.append(Option(Text(empty, style="dim italic"), disabled=True))

        if self.results is not None:
            section("s", f"Search “{self.results_for}”", self.results, "nothing in memory matches")
        ov = self.overview or mv.Overview()
        section("u", "Used by the last reply", ov.used, "none: no reply yet, or it used no memory")
        section("g", "Your gestalts", ov.gestalts, "none yet: they are distilled from your own turns")
        listing = self.query_one(OptionList)
        keep = listing.highlighted
        listing.clear_options()
        listing.add_options(options)
        if keep is not None and listing.option_count:  # stay near the item just forgotten
            listing.highlighted = min(keep, listing.option_count - 1)
            if listing.highlighted_option.disabled:
                listing.action_cursor_down()

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#mem-status", Static)
        status.update(text)
        status.set_class(error, "-error")

    @property
    def highlighted(self) -> mv.Entry | None:
        option = self.query_one(OptionList).highlighted_option
        return self._entries.get(option.id) if option is not None and option.id else None

    def action_focus_list(self) -> None:
        listing = self.query_one(OptionList)
        if not listing.has_focus:
            listing.focus()
            if listing.highlighted is None:
                listing.action_first()

    def action_close(self) -> None:
        self.dismiss(None)

    # --- forgetting ---------------------------------------------------------------------------

    def action_forget(self) -> None:
        entry = self.highlighted
        if entry is None:
            self._status("Highlight an item first: ↓ from the search box, then the arrows.")
            return
        if not entry.forgettable:
            self._status(f"{entry.id} is lore from a character sheet: edit the sheet to change it.", error=True)
            return
        what = {"gestalt": "gestalt", "summary": "summary and the turns it holds"}.get(entry.kind, "turn")
        self.app.push_screen(ConfirmScreen(f"Forget this {what} ({entry.id})?", entry.text, yes="Forget"),
                             callback=lambda yes: self._forget(entry) if yes else None)

    @work(thread=True, exclusive=True, group="memory-forget", exit_on_error=False)
    def _forget(self, entry: mv.Entry) -> None:
        self.app.from_thread(self._status, f"forgetting {entry.id}…")
        try:
            done = mv.forget(self.session, entry)
        except (VaultError, LLMError, OSError) as exc:
            self.app.from_thread(self._status, f"cannot forget: {exc}", error=True)
            return
        self.forgotten.append(entry.id)
        self.app.from_thread(self._forgot, done)

    def _forgot(self, done: str) -> None:
        self._status(done)
        self.notify(done, title="Memory", timeout=6)
        self._load()
        query = self.query_one(Input).value
        if query.strip():
            self._search(query)
