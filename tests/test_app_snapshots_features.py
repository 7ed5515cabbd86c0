"""Screenshots of the roundtable (setup and turns), pick-best, search and switch-user screens in the real
app. What varies run to run is fixed before the shot: the model's text (llama.cpp's float order may
differ between machines), session ids (timestamps) and the search's milliseconds. Update with
`pytest --snapshot-update`."""

from __future__ import annotations

import json
import re

from textual.widgets import Input, Markdown

from home.app import AppOptions, HomeApp
from home.app.screens.pick_best import PickBestScreen
from home.app.screens.roundtable import RoundtableScreen
from home.app.screens.roundtable_setup import RoundtableSetup
from home.app.screens.search import SearchScreen
from home.app.screens.user_switch import UserSwitchScreen
from home.app.widgets.messages import AssistantMessage, SystemLine
from home.app.widgets.prompt_input import PromptInput
from tests.test_app import say, wait_for, wait_ready
from vault.layout import Vault
from vault.manifest import ManifestStore

SIZE = (100, 24)
FIXED = ["Start with the one you will use this month.", "Pick the one your friends use, so you can ask them.",
         "Both are fine: the first project matters more than the language."]


def make(tmp_path, **kw) -> HomeApp:
    opts = dict(vault=tmp_path / "v", user="me", max_tokens=6, n_ctx=1024, temperature=0.0, seed=1)
    return HomeApp(AppOptions(**{**opts, **kw}))


async def fix_replies(pilot, screen) -> None:
    """The model's words → fixed sentences; the cursor stops blinking."""
    for i, msg in enumerate(screen.query(AssistantMessage)):
        msg.text = FIXED[i % len(FIXED)]
        await msg.query_one(Markdown).update(msg.text)
    for s in pilot.app.screen_stack:  # the chat's lines under a modal too (the first screen's names a time)
        for line in s.query(SystemLine):
            text = re.sub(r"session \S+", "session 20260101-000000", str(line.render()))
            line.update(re.sub(r"\(\w{3} \d\d \d\d:\d\d · ", "(Jan 01 09:00 · ", text))
    for s in pilot.app.screen_stack:  # the chat's prompt under a modal too: its blink phase shows through
        for w in [*s.query(PromptInput), *s.query(Input)]:
            w.cursor_blink = False
    await pilot.pause()


def shoot(snap_compare, app, run_before) -> bool:
    try:
        return snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        app.close_engine()


def test_roundtable_setup_snapshot(tmp_path, snap_compare):
    app = make(tmp_path)

    async def run_before(pilot) -> None:
        await wait_ready(pilot, app)
        app.action_roundtable()
        await wait_for(pilot, lambda: isinstance(app.screen, RoundtableSetup) and app.screen.query("#rt-rounds")
                       and app.screen.query_one("#rt-topic").has_focus)
        await pilot.press(*"Rust or Go first?")
        await fix_replies(pilot, app.screen)

    assert shoot(snap_compare, app, run_before)


def test_roundtable_screen_snapshot(tmp_path, snap_compare):
    app = make(tmp_path)

    async def run_before(pilot) -> None:
        await wait_ready(pilot, app)
        app.action_roundtable()
        await wait_for(pilot, lambda: isinstance(app.screen, RoundtableSetup) and app.screen.query("#rt-rounds")
                       and app.screen.query_one("#rt-topic").has_focus)
        app.screen.query_one("#rt-rounds", Input).value = "1"
        await pilot.press(*"Rust or Go first?", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RoundtableScreen) and app.screen.table.remaining == 0
                       and not app.screen.running)
        await fix_replies(pilot, app.screen)

    assert shoot(snap_compare, app, run_before)


def test_pick_best_snapshot(tmp_path, snap_compare):
    app = make(tmp_path)

    async def run_before(pilot) -> None:
        await wait_ready(pilot, app)
        await say(pilot, app, "Rust or Go first?")
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, PickBestScreen) and app.screen.done)
        await fix_replies(pilot, app.screen)

    assert shoot(snap_compare, app, run_before)


def test_search_snapshot(tmp_path, snap_compare):
    vault = Vault.open(tmp_path / "v")
    for sid, when, texts in (("20260101-090000-000000-aaaa", "2026-01-01T09:00", ["How do I bake lemon bread?",
                                                                                  "Mix flour, sugar and lemon zest."]),
                             ("20260102-090000-000000-bbbb", "2026-01-02T09:00", ["Is lemon good in tea?"])):
        lines = [json.dumps({"v": 1, "id": f"{sid}:{n}", "session": sid, "turn": n, "time": f"{when}:0{n}.000Z",
                             "user": "me", "persona": None if n % 2 else "sage",
                             "role": "user" if n % 2 else "assistant", "text": t})
                 for n, t in enumerate(texts, 1)]
        (vault.logs_dir / f"{sid}.jsonl").write_text("\n".join(lines) + "\n")
    app = make(tmp_path)

    async def run_before(pilot) -> None:
        await wait_ready(pilot, app)
        app.action_search()
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen) and app.screen.query(Input)
                       and app.screen.query_one(Input).has_focus)
        await pilot.press(*"lemon")
        await wait_for(pilot, lambda: app.screen.result is not None and app.screen.result.query == "lemon")
        status = app.screen.query_one("#search-status")
        status.update(re.sub(r" · \d+ ms", " · 3 ms", str(status.render())))
        await fix_replies(pilot, app.screen)

    assert shoot(snap_compare, app, run_before)


def test_switch_user_snapshot(tmp_path, snap_compare):
    vault = Vault.open(tmp_path / "v")
    vault.config_path.write_text('user = "me"\n')  # the default config names the login user: not portable
    with ManifestStore(vault).update() as m:
        m.ensure_user("alice")
    app = make(tmp_path)

    async def run_before(pilot) -> None:
        await wait_ready(pilot, app)
        await app.action_switch_user()
        await wait_for(pilot, lambda: isinstance(app.screen, UserSwitchScreen) and app.screen.query(Input)
                       and app.screen.query_one(Input).has_focus)
        await pilot.press(*"bob")
        await fix_replies(pilot, app.screen)

    assert shoot(snap_compare, app, run_before)
