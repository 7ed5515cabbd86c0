"""Dual mode (home/router/mode.py): task class → mode, the card's per-mode settings and their defaults, the
persona adapters' scales, the prompt line, and bad `extensions.home.modes` refused at import."""

from __future__ import annotations

import json

import pytest

from home.router.mode import (
    DEFAULT_SCALE,
    DEFAULT_SYSTEM,
    Mode,
    apply_mode,
    asks_about_the_world,
    check_choice,
    choose_mode,
    mode_for_task,
    mode_message,
    persona_adapters,
)
from vault.errors import PersonaError
from vault.layout import Vault
from vault.manifest import AdapterEntry, Manifest
from vault.personas import Persona, import_card, normalise_card


def card(modes=None, adapters=()) -> Persona:
    home = {"adapters": list(adapters)}
    if modes is not None:
        home["modes"] = modes
    data = normalise_card({"spec": "chara_card_v2", "spec_version": "2.0",
                           "data": {"name": "Sage", "extensions": {"home": home}}}, "sage.json")
    return Persona("sage", data)


@pytest.mark.parametrize(("task", "mode"), [("chat", "character"), ("coding", "focused"), ("writing", "focused"),
                                            ("planning", "focused"), ("advice", "focused"),
                                            ("cooking", "focused")])  # a user's own label asks for something
def test_task_class_picks_the_mode(task, mode):
    assert mode_for_task(task)[0] == mode
    m = choose_mode(card(), task, 0.8)
    assert m.name == mode and not m.pinned and f"task {task}" in m.reason and "0.80" in m.reason


# bench/dual_mode.py's chit-chat and the router's own chat examples stay in character; its checkable questions
# the router calls chat go focused (5 of 20 went in character before, and auto answered fewer of them).
@pytest.mark.parametrize(("text", "mode"), [
    ("How many legs does a spider have?", "focused"), ("What colour do you get by mixing blue and yellow?", "focused"),
    ("What planet do we live on?", "focused"), ("how long do I boil an egg?", "focused"),
    ("hey, how was your day?", "character"), ("do you like rainy days?", "character"),
    ("how's life treating you?", "character"), ("hey, how's it going?", "character"),
    ("what's the best thing about today?", "character"), ("what would you do on a sunny afternoon?", "character"),
    ("what's the weirdest fact you know?", "character"), ("I had pancakes for breakfast", "character"),
    ("tell me about yourself", "character"), ("who are you?", "character")])
def test_a_chat_class_question_about_the_world_is_answered_focused(text, mode):
    assert asks_about_the_world(text) == (mode == "focused")
    m = choose_mode(card(), "chat", 0.9, text=text)
    assert m.name == mode and ("about the world" in m.reason) == (mode == "focused")
    assert choose_mode(card(), "chat", 0.9, pinned="character", text=text).name == "character"  # a pin still wins
    assert choose_mode(card(), "coding", 0.9, text=text).name == "focused"  # other classes: focused as before


def test_defaults_when_the_card_says_nothing():
    focused, character = choose_mode(card(), "coding", 0.9), choose_mode(card(), "chat", 0.9)
    assert (focused.system, focused.scale) == (DEFAULT_SYSTEM["focused"], 0.6) == (DEFAULT_SYSTEM["focused"],
                                                                                  DEFAULT_SCALE["focused"])
    assert "directly and correctly" in focused.system and "own voice" in focused.system
    assert (character.system, character.scale) == ("", 1.0)
    assert mode_message(character) is None
    assert mode_message(focused) == {"role": "system", "content": focused.system}


def test_the_card_overrides_per_mode_and_macros_are_filled():
    sage = card({"focused": {"scale": 0.5, "system": "{{char}} answers {{user}}'s question plainly."},
                 "character": {"system": "Stay in character."}})
    f = choose_mode(sage, "coding", 0.9, user="ana")
    assert (f.system, f.scale) == ("Sage answers ana's question plainly.", 0.5)
    c = choose_mode(sage, "chat", 0.9)
    assert (c.system, c.scale) == ("Stay in character.", 1.0)  # scale left out: the default
    assert mode_message(c.to_dict()) == {"role": "system", "content": "Stay in character."}


def test_a_pin_wins_over_the_task_and_is_checked():
    m = choose_mode(card(), "coding", 0.99, pinned="Character")
    assert m.name == "character" and m.pinned and m.reason == "pinned by the user (character)"
    assert choose_mode(card(), "chat", 0.9, pinned="auto").name == "character"
    assert check_choice(None) == "auto"
    with pytest.raises(ValueError, match="expected one of auto, focused, character"):
        check_choice("silly")


def test_no_persona_nothing_to_adjust():
    m = choose_mode(None, "coding", 0.9)
    assert m.name == "focused" and (m.system, m.scale) == ("", 1.0) and "no persona" in m.reason
    assert mode_message(m) is None


def test_only_the_persona_adapters_are_scaled():
    base = {"fingerprint": "x", "name": "m"}
    manifest = Manifest()
    for ident, kind in [("sage-persona-2", "persona"), ("quill-persona", "persona"), ("code-helper", "task"),
                        ("sage-style", "style")]:
        manifest.adapters[ident] = AdapterEntry(id=ident, name=ident, file=f"adapters/{ident}/a.gguf", base=base,
                                                owner="me", kind=kind)
    sage = card(adapters=[{"id": "sage-style"}])
    ids = persona_adapters(manifest, sage)
    assert ids == {"sage-persona-2", "sage-style"}  # its trained persona adapter and the card's own
    stack = [("sage-style", 0.8), ("sage-persona-2", 1.0), ("code-helper", 1.0)]
    out, m = apply_mode(choose_mode(sage, "coding", 0.9), stack, ids)
    assert out == [("sage-style", 0.48), ("sage-persona-2", 0.6), ("code-helper", 1.0)]
    assert m.scaled == ("sage-style", "sage-persona-2") and m.to_dict()["scaled"] == ["sage-style", "sage-persona-2"]
    same, m2 = apply_mode(choose_mode(sage, "chat", 0.9), stack, ids)
    assert same == stack and m2.scaled == ()
    assert persona_adapters(manifest, None) == set()
    assert isinstance(m, Mode)


@pytest.mark.parametrize(("modes", "field"), [
    ([], "extensions.home.modes: expected an object"),
    ({"focussed": {}}, "extensions.home.modes.focussed: unknown mode (known: focused, character)"),
    ({"focused": "short"}, "extensions.home.modes.focused: expected an object"),
    ({"focused": {"scale": "half"}}, "extensions.home.modes.focused.scale: expected a number"),
    ({"focused": {"scale": -1}}, "extensions.home.modes.focused.scale: expected >= 0"),
    ({"character": {"system": 3}}, "extensions.home.modes.character.system: expected a string"),
    ({"character": {"prompt": "x"}}, "extensions.home.modes.character.prompt: unknown setting (known: system, scale)"),
])
def test_bad_modes_are_one_line_naming_file_and_field(tmp_path, modes, field):
    src = tmp_path / "sage.json"
    text = json.dumps({"spec": "chara_card_v2", "spec_version": "2.0",
                       "data": {"name": "Sage", "extensions": {"home": {"modes": modes}}}})
    src.write_text(text)


    vault = Vault.open(tmp_path / "v")
    with pytest.raises(PersonaError) as err:
        import_card(vault, src)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{src}: data.") and field in msg, msg
    assert src.read_text() == text and not list(vault.personas_dir.glob("*.json"))
