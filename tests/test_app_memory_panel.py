"""The memory panel in the real app (ctrl+o, or "Memory…" in the palette): what the last reply used, a
search over memory, the user's gestalts and the counts; forgetting a turn (an `exclude` event in its
log, through the chat's open log for the session in progress) or a gestalt (its file deleted, memory
synced) after a confirmation; lore is refused; with the store owned by another process the panel says
so and still lists the gestalt files. Real engine, MiniLM, ChromaDB; a vault seeded with two old
sessions (January: too old for the start-up distillation) and two gestalts."""

from __future__ import annotations

import asyncio
import json
import re

from textual.widgets import Input, OptionList

from home.app.screens.confirm import ConfirmScreen
from home.app.screens.memory import MemoryScreen
from tests.test_app import drive, make_app, say, wait_for, wait_ready
from tests.test_app_palette import run_command
from vault import gestalts as gs
from vault.fsio import FileLock
from vault.layout import Vault

SISTER = "20260101-090000-000000-aaaa"
BREAD = "20260102-090000-000000-bbbb"
RESUMED = "20260103-090000-000000-cccc"
CELLO = "20260104-090000-000000-dddd"
SIZE = (100, 24)


def write_session(vault: Vault, sid: str, day: str, texts: list[str], memory_ids: list[str] | None = None) -> None:
    lines = []
    for n, text in enumerate(texts, 1):
        rec = {"v": 1, "id": f"{sid}:{n}", "session": sid, "turn": n, "time": f"2026-01-{day}T09:00:0{n}.000Z",
               "user": "me", "persona": None, "role": "user" if n % 2 else "assistant", "text": text}
        if n % 2 == 0:
            rec["memory_ids"] = memory_ids or []
        lines.append(json.dumps(rec))
    (vault.logs_dir / f"{sid}.jsonl").write_text("\n".join(lines) + "\n")


def seeded(tmp_path, keys: str = "") -> tuple[Vault, list[gs.Gestalt]]:
    vault = Vault.open(tmp_path / "v")
    vault.config_path.write_text(f'user = "me"\n[gestalts]\nenabled = false\n{keys}')
    write_session(vault, SISTER, "01", ["My sister Ana lives in Porto.", "Porto is a lovely city."])
    write_session(vault, BREAD, "02", ["I bake lemon bread on Sundays.", "That sounds delicious."])
    made = gs.add_gestalts(vault, "me", [gs.Draft("The user prefers green tea.", "preference", said="2026-01-01T09:00:00Z"),
                                         gs.Draft("The user has a sister called Ana.", said="2026-01-02T09:00:00Z")])
    return vault, made


async def settle(pilot, app) -> None:
    """The start-up catch-up and the gestalt sync are done: the store holds the seeded vault."""
    await wait_ready(pilot, app)
    await asyncio.to_thread(app.gestalts.wait_idle, 60)
    await asyncio.to_thread(app.session.recall.wait_idle, 60)


async def open_panel(pilot, app, key: str = "ctrl+o") -> MemoryScreen:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, MemoryScreen) and app.screen.overview is not None)
    return app.screen


async def search(pilot, panel: MemoryScreen, query: str) -> None:
    panel.query_one(Input).value = query
    await wait_for(pilot, lambda: panel.results_for == query)


async def forget(pilot, panel: MemoryScreen, section: str, ident: str, key: str = "delete", answer: str = "y") -> None:
    """Highlight `ident` in a section (s, u, g), press `key`, answer the question."""
    listing = panel.query_one(OptionList)
    listing.focus()
    option_id = next(k for k, e in panel._entries.items() if k.startswith(f"{section}-") and e.id == ident)
    listing.highlighted = listing.get_option_index(option_id)
    before, loads = len(panel.forgotten), panel.loads
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
    await pilot.press(answer)
    if answer == "y":
        await wait_for(pilot, lambda: len(panel.forgotten) > before and panel.loads > loads)
    else:
        await wait_for(pilot, lambda: pilot.app.screen is panel)


def log_of(vault: Vault, sid: str) -> list[dict]:
    return [json.loads(line) for line in (vault.logs_dir / f"{sid}.jsonl").read_text().splitlines() if line.strip()]


def test_panel_shows_used_search_gestalts_and_forgets(tmp_path):
    vault, (tea, sister) = seeded(tmp_path)
    app = make_app(vault.root, max_tokens=4)

    async def scenario(pilot):
        await settle(pilot, app)
        store = app.session.recall.store
        lore = {"id": "lore-sage:1", "session": "lore-sage", "turn": 1, "role": "assistant", "user": "me",
                "persona": "sage", "time": "2026-01-01T00:00:00Z", "text": "Sage (background): keeps a lighthouse."}
        await asyncio.to_thread(store.upsert, [lore])
        await say(pilot, app, "Where does my sister Ana live?")
        used = app.session.conversation.last.record["memory_ids"]
        assert f"{SISTER}:1" in used
        await asyncio.to_thread(app.session.recall.wait_idle, 60)
        current = app.session.conversation.log.session

        panel = await open_panel(pilot, app)
        ov = panel.overview
        assert [e.id for e in ov.used] == used
        assert next(e for e in ov.used if e.id == f"{SISTER}:1").text == "My sister Ana lives in Porto."
        assert [e.id for e in ov.gestalts] == [f"gestalt:{sister.id}", f"gestalt:{tea.id}"]  # newest first
        assert ov.counts["items"] == store.count() and ov.counts["gestalts"] == 2
        assert "2 gestalts" in str(panel.query_one("#mem-title").render())

        await search(pilot, panel, "lemon bread")
        assert panel.results[0].id == f"{BREAD}:1" and panel.results[0].kind == "user"
        await forget(pilot, panel, "s", f"{BREAD}:1", answer="n")  # no: nothing changes
        assert panel.forgotten == [] and store.get(f"{BREAD}:1") is not None
        await forget(pilot, panel, "s", f"{BREAD}:1")
        await wait_for(pilot, lambda: panel.results_for == "lemon bread" and panel.results is not None
                       and all(e.id != f"{BREAD}:1" for e in panel.results))
        assert store.get(f"{BREAD}:1") is None
        assert log_of(vault, BREAD)[-1] | {"time": None} == {
            "v": 1, "id": f"{BREAD}:3", "session": BREAD, "turn": 3, "time": None, "role": "event",
            "event": "exclude", "target": f"{BREAD}:1", "text": ""}

        await forget(pilot, panel, "g", f"gestalt:{tea.id}", key="f")
        assert not tea.path.exists() and store.get(f"gestalt:{tea.id}") is None
        assert tea.hash in gs.forgotten(vault, "me")
        assert " 1 gestalt · " in str(panel.query_one("#mem-title").render())

        await search(pilot, panel, "where does my sister live")  # this session's own turn is in memory too
        await forget(pilot, panel, "s", f"{current}:1")
        await search(pilot, panel, "lighthouse")
        listing = panel.query_one(OptionList)
        listing.focus()
        listing.highlighted = listing.get_option_index(next(k for k, e in panel._entries.items() if e.kind == "lore"))
        await pilot.press("delete")
        assert "lore from a character sheet" in str(panel.query_one("#mem-status").render())
        assert not isinstance(app.screen, ConfirmScreen) and store.get("lore-sage:1") is not None

        await pilot.press("escape")
        await wait_for(pilot, lambda: app.chat is not None)
        await run_command(pilot, app, "Memory…")
        await wait_for(pilot, lambda: isinstance(app.screen, MemoryScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.chat is not None)
        await say(pilot, app, "Thanks!")

    drive(app, scenario)
    current = app.session.conversation.log.session
    records = log_of(vault, current)
    assert [r["turn"] for r in records] == [1, 2, 3, 4, 5]  # the exclude event went through the chat's log
    assert records[2] | {"time": None} == {"v": 1, "id": f"{current}:3", "session": current, "turn": 3,
                                           "time": None, "role": "event", "event": "exclude",
                                           "target": f"{current}:1", "text": ""}


def test_panel_when_another_process_owns_memory(tmp_path):
    vault, (tea, sister) = seeded(tmp_path, keys='[keys]\nmemory = "f10"\n')
    app = make_app(vault.root)

    async def scenario(pilot):
        with FileLock(vault.lock_path("memory"), timeout=0):  # as another Home process holds it
            await wait_ready(pilot, app)
        assert app.session.recall is None
        panel = await open_panel(pilot, app, key="f10")  # remapped in config.toml [keys]
        title = str(panel.query_one("#mem-title").render())
        assert title.startswith("Memory is off:") and "in use by another Home process" in title
        assert [e.id for e in panel.overview.gestalts] == [f"gestalt:{sister.id}", f"gestalt:{tea.id}"]
        assert panel.overview.used == [] and panel.overview.counts is None
        await search(pilot, panel, "tea")
        assert panel.results == []
        assert "search needs memory" in str(panel.query_one("#mem-status").render())
        await forget(pilot, panel, "g", f"gestalt:{tea.id}")  # the files can be forgotten without the store
        assert not tea.path.exists() and tea.hash in gs.forgotten(vault, "me")

    drive(app, scenario)


def test_memory_panel_snapshot(tmp_path, snap_compare):
    vault, (tea, sister) = seeded(tmp_path)
    write_session(vault, RESUMED, "03", ["Do you remember where Ana lives?", "She lives in Porto."],
                  memory_ids=[f"{SISTER}:1", f"gestalt:{sister.id}"])
    app = make_app(vault.root)

    async def run_before(pilot) -> None:
        await settle(pilot, app)
        await app.action_resume(RESUMED)
        panel = await open_panel(pilot, app)
        await search(pilot, panel, "lemon")
        status = panel.query_one("#mem-status")
        status.update(re.sub(r" · \d+ ms", " · 9 ms", str(status.render())))
        panel.query_one(Input).cursor_blink = False
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        app.close_engine()


def test_panel_forgets_a_session_summary_as_the_turns_it_holds(tmp_path):
    """`[memory] summaries = true`: the start-up catch-up summarised CELLO; forgetting `summary:<CELLO>` in
    the panel logs an exclude event for each turn it holds and takes the summary out (issue 13)."""
    vault, _ = seeded(tmp_path, keys="[memory]\nsummaries = true\n")
    write_session(vault, CELLO, "04", ["I play the cello in a small orchestra.", "Lovely.",
                                       "My brother Rui studies physics in Coimbra.", "Interesting."])
    app = make_app(vault.root, max_tokens=4)
    summary = f"summary:{CELLO}"

    async def scenario(pilot):
        await settle(pilot, app)
        store = app.session.recall.store
        assert store.get(summary).sources == (f"{CELLO}:1", f"{CELLO}:3")
        panel = await open_panel(pilot, app)
        await search(pilot, panel, "cello orchestra brother physics")
        assert summary in [e.id for e in panel.results]
        await forget(pilot, panel, "s", summary)
        assert store.get(summary) is None and store.get(f"{CELLO}:1") is None
        assert f"forgot {summary} and the 2 turns {summary} held" in str(panel.query_one("#mem-status").render())

    drive(app, scenario)
    assert [(r["event"], r["target"]) for r in log_of(vault, CELLO) if r["role"] == "event"] == [
        ("exclude", f"{CELLO}:1"), ("exclude", f"{CELLO}:3")]
