"""Search past sessions: the scan over the logs (terms, phrases, escapes, forgotten turns, order, limit)
and the palette screen that opens a hit's session."""

from __future__ import annotations

from home.app.screens.search import SearchScreen
from tests.test_app import drive, make_app, wait_for, wait_ready
from tests.test_app_palette import run_command
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.search import search_logs, snippet_of


def write_session(vault: Vault, sid: str, turns: list[tuple[str, str]]) -> ConversationLog:
    log = ConversationLog.create(vault, sid)
    for role, text in turns:
        log.append({"user": "me", "persona": "sage" if role == "assistant" else None, "role": role, "text": text})
    return log


def test_every_term_case_insensitive_phrases_and_escaped_text(tmp_path):
    vault = Vault.open(tmp_path / "v")
    write_session(vault, "s1", [("user", "My cat is called \"Tom\"."), ("assistant", "Tom is a fine name\nfor a CAT.")])
    write_session(vault, "s2", [("user", "Dogs or cats?"), ("assistant", "Both, said Tom Jones.")])
    hits = search_logs(vault, "tom cat").hits
    assert sorted((h.session, h.role) for h in hits) == [("s1", "assistant"), ("s1", "user")]  # per turn
    assert [h.session for h in search_logs(vault, 'called "Tom').hits] == ["s1"]  # a quote inside the text
    assert [h.session for h in search_logs(vault, '"fine name for"').hits] == ["s1"]  # across a newline
    assert search_logs(vault, "tom jones cat").hits == []
    assert search_logs(vault, "   ").hits == [] and search_logs(vault, "x").sessions == 2
    (hit,) = search_logs(vault, "jones").hits
    assert (hit.who, hit.record_id) == ("sage", "s2:2") and hit.snippet[slice(*hit.spans[0])] == "Jones"


def test_newest_first_a_limit_and_forgotten_turns_hidden(tmp_path):
    vault = Vault.open(tmp_path / "v")
    for i in range(5):
        write_session(vault, f"s{i}", [("user", f"apple number {i}")])
    forget = ConversationLog.open(vault, "s4")
    forget.append({"user": "me", "persona": None, "role": "event", "event": "exclude", "target": "s2:1", "text": ""})
    result = search_logs(vault, "apple", limit=3)
    assert [h.session for h in result.hits] == ["s4", "s3", "s1"] and result.truncated
    assert all("s2" != h.session for h in search_logs(vault, "apple").hits)


def test_a_snippet_is_one_line_around_the_first_match():
    text = "word " * 60 + "needle\n in the\nhaystack " + "tail " * 40
    snippet, spans = snippet_of(text, ["needle"], width=40)
    assert "\n" not in snippet and snippet.startswith("…") and snippet.endswith("…")
    assert [snippet[a:b] for a, b in spans] == ["needle"] and len(snippet) <= 42


def test_search_from_the_palette_opens_the_session(tmp_path):
    vault = Vault.open(tmp_path / "v")
    write_session(vault, "20260101-old", [("user", "the recipe for lemon cake"), ("assistant", "Lemons, flour, sugar.")])
    write_session(vault, "20260102-other", [("user", "weather tomorrow?")])
    app = make_app(vault.root)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await run_command(pilot, app, "Search past sessions")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))
        screen = app.screen
        await pilot.press(*"LEMON")
        await wait_for(pilot, lambda: screen.result is not None and screen.result.query == "LEMON")
        assert [h.session for h in screen.result.hits] == ["20260101-old"] * 2
        assert "2 matching turns in 2 sessions" in str(screen.query_one("#search-status").render())
        await pilot.press("down", "down", "enter")  # the list, its second hit
        await wait_for(pilot, lambda: app.chat is not None and app.session.conversation.log.session == "20260101-old")
        assert [m["content"] for m in app.session.conversation.history] == ["the recipe for lemon cake",
                                                                            "Lemons, flour, sugar."]
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.chat is not None)

    drive(app, scenario)
