"""Screenshots of the states that hold no timings: the error screen and the chat screen just after the
model loaded (persona bar, empty chat, status bar). Update with `pytest --snapshot-update`."""

from __future__ import annotations

from home.app import AppOptions, HomeApp
from home.app.widgets.prompt_input import PromptInput
from tests.test_app import wait_for, wait_ready

SIZE = (100, 24)


def test_error_screen_snapshot(tmp_path, snap_compare):
    app = HomeApp(AppOptions(vault=tmp_path / "v", user="me", model="/nonexistent/model.gguf", n_ctx=1024))

    async def run_before(pilot) -> None:
        await wait_for(pilot, lambda: app.startup_error is not None)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_chat_screen_after_loading_snapshot(tmp_path, snap_compare):
    app = HomeApp(AppOptions(vault=tmp_path / "v", user="me", persona="sage", n_ctx=1024))

    async def run_before(pilot) -> None:
        await wait_ready(pilot, app)
        app.chat.query_one(PromptInput).cursor_blink = False  # a blink phase is not a regression
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        app.close_engine()
