"""The roundtable: the prompt each speaker sees (pure), turns on the real engine with each persona's own
adapters, and the screen driven through the palette (interject, stop, another round, back to chat)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from home.app.screens.roundtable import RoundtableScreen
from home.app.screens.roundtable_setup import RoundtableSetup
from home.roundtable import Line, Roundtable, Seat, messages_for, strip_name_prefix, turn_params
from llm.params import GenParams
from tests.test_app import drive, make_app, records, say, wait_for, wait_ready
from tests.test_app_palette import run_command
from vault.layout import Vault
from vault.logs import ConversationLog
from vault.personas import get_persona


def persona_vault(root: Path, model_path: Path) -> Vault:
    """Two vault personas, Ada and Bo, each with its own random rank-4 LoRA (a-ada, a-bo)."""
    from llm.gguf_meta import read_model_info
    from tests.loras import make_random_lora
    from vault.manifest import AdapterEntry, ManifestStore

    vault = Vault.open(root)
    fp = read_model_info(model_path).fingerprint
    with ManifestStore(vault).update() as m:
        for i, name in enumerate(("ada", "bo")):
            target = vault.adapters_dir / f"a-{name}" / "adapter.gguf"
            target.parent.mkdir()
            make_random_lora(model_path, target, rank=4, seed=i)
            m.add_adapter(AdapterEntry(id=f"a-{name}", name=name, file=f"adapters/a-{name}/adapter.gguf",
                                       base={"fingerprint": fp}, kind="persona"))
    for name, scale in (("ada", 0.5), ("bo", 1.0)):
        card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
            "name": name.capitalize(), "system_prompt": f"You are {name.capitalize()}.",
            "extensions": {"home": {"adapters": [{"id": f"a-{name}", "scale": scale}]}}}}
        (vault.personas_dir / f"{name}.json").write_text(json.dumps(card))
    return vault


def seats(vault: Vault, *names: str) -> list[Seat]:
    return [Seat(get_persona(vault, n), [], GenParams(max_tokens=6, temperature=0.0, seed=1)) for n in names]


def test_each_speaker_sees_its_own_lines_as_assistant_and_the_others_named(tmp_path):
    vault = Vault.open(tmp_path / "v")
    table = seats(vault, "sage", "spark", "quill")
    lines = [Line("Sage", "sage", "Plan first."), Line("Spark", "spark", "Wild ideas!"),
             Line("me", None, "Keep it short."), Line("Quill", "quill", "Fewer words.")]
    msgs = messages_for(table[0], table, lines, "me", "naming a bakery")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"].startswith("You are Sage") and "Topic: naming a bakery" in msgs[0]["content"]
    assert "Spark, Quill, me and you" in msgs[0]["content"]
    assert msgs[1]["content"] == "me: naming a bakery"
    assert msgs[2]["content"] == "Plan first."
    # consecutive lines of others merge into one user message, each named
    assert msgs[3]["content"] == "Spark: Wild ideas!\n\nme: Keep it short.\n\nQuill: Fewer words."
    # a speaker who spoke last still gets a user message to answer
    tail = messages_for(table[1], table, lines[:2], "me", "x")
    assert tail[-1] == {"role": "user", "content": "me: go on, Spark."}
    params = turn_params(table[0], table, "me")
    assert set(params.stop) >= {"\nSpark:", "\nQuill:", "\nme:"} and "\nSage:" not in params.stop


def test_a_reply_that_starts_with_a_name_at_the_table_has_it_cut():
    names = ["Sage", "Spark", "me"]
    assert "".join(strip_name_prefix(iter(["Sa", "ge", ":", " Hello", " there"]), names)) == "Hello there"
    assert "".join(strip_name_prefix(iter(["Spark: yes"]), names)) == "yes"  # another speaker's name echoed
    assert "".join(strip_name_prefix(iter(["Sam is", " here"]), names)) == "Sam is here"
    assert "".join(strip_name_prefix(iter([" sage: ok"]), names)) == "ok"
    assert "".join(strip_name_prefix(iter(["Sag"]), names)) == "Sag"
    assert "".join(strip_name_prefix(iter(["I said Sage: no"]), names)) == "I said Sage: no"


def test_turns_use_each_personas_stack_and_are_logged_with_it(tmp_path, model_path, engine):
    from home.stack import activate

    vault = persona_vault(tmp_path / "v", model_path)
    from vault.manifest import ManifestStore

    manifest = ManifestStore(vault).read()
    ada, bo = get_persona(vault, "ada"), get_persona(vault, "bo")
    params = GenParams(max_tokens=6, temperature=0.0, seed=1)
    table_seats = [Seat(ada, [("a-ada", 0.5)], params), Seat(bo, [("a-bo", 1.0)], params)]
    stacks_seen = []

    def prepare(stack):
        activate(engine, vault, manifest, stack)

    log = ConversationLog.create(vault)
    table = Roundtable(engine, log, "me", table_seats, "tea or coffee?", rounds=1, prepare=prepare)
    try:
        for _ in range(2):
            for i, _piece in enumerate(table.speak()):
                if i == 0:
                    stacks_seen.append(engine.adapters)
            if table.turns == 1:
                table.interject("Be brief.")
        assert table.remaining == 0
        table.more()
        assert table.remaining == 2
        cancel = threading.Event()
        for _piece in table.speak(cancel):
            cancel.set()  # Esc after the first piece: the turn is logged, partial
        assert table.turns == 3 and table.lines[-1].partial
    finally:
        engine.set_adapters([])
        for a in ("a-ada", "a-bo"):
            engine.unload_adapter(a)
    assert stacks_seen == [[("a-ada", 0.5)], [("a-bo", 1.0)]]
    recs = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [(r["role"], r.get("persona")) for r in recs] == [
        ("event", None), ("user", None), ("assistant", "ada"), ("user", None), ("assistant", "bo"),
        ("assistant", "ada")]
    assert recs[5]["partial"] is True and recs[5]["finish_reason"] == "cancelled"
    assert recs[0]["event"] == "roundtable" and recs[0]["personas"] == ["ada", "bo"]
    assert recs[1]["text"] == "tea or coffee?" and recs[3]["text"] == "Be brief."
    assert recs[2]["adapters"] == [{"id": "a-ada", "scale": 0.5}] and recs[4]["adapters"] == [{"id": "a-bo", "scale": 1.0}]
    assert recs[2]["roundtable"] == {"round": 1, "seat": 0} and recs[4]["roundtable"] == {"round": 1, "seat": 1}
    assert all(r["tokens"]["completion"] <= 6 and r["partial"] is False for r in (recs[2], recs[4]))
    assert recs[2]["params"]["max_tokens"] == 6 and "\nBo:" in recs[2]["params"]["stop"]


def test_roundtable_from_the_palette_interject_stop_and_back_to_chat(tmp_path, model_path):
    vault = persona_vault(tmp_path / "v", model_path)
    app = make_app(vault.root, max_tokens=6)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await say(pilot, app, "hello")
        chat_session = app.session.conversation.log.session
        await run_command(pilot, app, "Roundtable…")
        await wait_for(pilot, lambda: isinstance(app.screen, RoundtableSetup))
        setup = app.screen
        setup.query_one("SelectionList").deselect_all()
        setup.query_one("SelectionList").select("bo")
        await pilot.press(*"tea")
        await pilot.press("enter")  # one persona only: refused with a reason
        await pilot.pause()
        assert "at least two" in str(setup.query_one("#rt-setup-error").render())
        setup.query_one("SelectionList").select("ada")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RoundtableScreen))
        screen = app.screen
        app.screen.query_one("PromptInput").insert("Agree on one.")
        await pilot.press("enter")  # interjection: the next speaker answers it
        await wait_for(pilot, lambda: not screen.running)
        assert screen.table.turns == 4 and "done" in screen.header()
        await pilot.press("ctrl+r")  # another round
        await wait_for(pilot, lambda: screen.table.turns == 6 and not screen.running)
        await pilot.press("escape")  # not running: Esc closes
        await wait_for(pilot, lambda: app.chat is not None)
        assert app.session.conversation.log.session == chat_session
        await wait_for(pilot, lambda: app.chat.stack_applied == app.session.stack)
        await say(pilot, app, "back")

    drive(app, scenario)
    recs = records(vault.root)
    table = [r for r in recs if any(x.get("event") == "roundtable" for x in recs if x["session"] == r["session"])]
    turns = [r for r in table if r["role"] == "assistant"]
    assert [r["persona"] for r in turns][:4] == ["ada", "bo", "ada", "bo"]  # the persona list's order
    assert {r["persona"]: r["adapters"] for r in turns} == {"ada": [{"id": "a-ada", "scale": 0.5}],
                                                             "bo": [{"id": "a-bo", "scale": 1.0}]}
    assert [r["text"] for r in table if r["role"] == "user"][:2] == ["tea", "Agree on one."]
    assert len(turns) == 6 and not any(r["partial"] for r in turns)
    chat = [r for r in recs if r not in table]
    assert [r["text"] for r in chat if r["role"] == "user"] == ["hello", "back"]
    assert all(r["adapters"] == [] for r in chat)


def test_esc_stops_a_turn_midway_ctrl_r_goes_on_and_ctrl_q_quits_mid_turn(tmp_path, monkeypatch):
    import time

    import home.roundtable as rt

    strip = rt.strip_name_prefix

    def paced(pieces, names):  # the real stream, 50 ms a piece: a 27-token turn outlasts the keypress
        for piece in strip(pieces, names):
            time.sleep(0.05)
            yield piece

    monkeypatch.setattr(rt, "strip_name_prefix", paced)
    app = make_app(tmp_path / "v", max_tokens=200)

    def speaking(app) -> bool:
        msgs = app.screen.query("AssistantMessage")
        return app.screen.running and bool(msgs) and bool(msgs.last().text)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        app.action_roundtable()
        await wait_for(pilot, lambda: isinstance(app.screen, RoundtableSetup) and app.screen.query("#rt-rounds")
                       and app.screen.query_one("#rt-topic").has_focus)
        app.screen.query_one("#rt-rounds").value = "20"
        await pilot.press(*"Write a long story about the sea.", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RoundtableScreen) and speaking(app))
        screen = app.screen
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.running)
        assert "stopped" in screen.header() and screen.table.lines[-1].partial
        assert screen.query("AssistantMessage").last().border_subtitle == "(stopped)"
        await pilot.press("ctrl+r")  # a stopped table goes on where it was
        await wait_for(pilot, lambda: screen.table.turns == 1 and speaking(app))
        await pilot.press("ctrl+q")  # mid-turn: stopped, logged, and the app exits

    drive(app, scenario)
    turns = [r for r in records(tmp_path / "v") if r["role"] == "assistant"]
    assert [r["persona"] for r in turns] == ["quill", "sage"]
    assert all(r["partial"] and r["tokens"]["completion"] < 200 for r in turns)
