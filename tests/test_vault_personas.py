"""vault/personas.py: built-ins, Character Card V1/V2/V3 import (JSON and PNG), lookup, and bad input.

PNGs are built here chunk by chunk (a real 1x1 image plus text chunks), so the parser is tested against
bytes laid out as the PNG spec says, not against our own writer.
"""

from __future__ import annotations

import base64
import json
import stat
import struct
import zlib

import pytest

from vault.errors import PersonaError, VaultError
from vault.layout import Vault
from vault.personas import Persona, get_persona, import_card, list_personas, save_persona, slug

V2_CARD = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
    "name": "Captain Brisk", "description": "A brisk sea captain.", "personality": "terse",
    "scenario": "", "first_mes": "Aye.", "mes_example": "", "tags": ["sea"],
    "extensions": {"other_app": {"x": 1}, "home": {"hotkey": "f9", "adapters": [{"id": "sea-voice", "scale": 0.7}],
                                                  "generation": {"temperature": 0.6, "max_tokens": 64},
                                                  "tasks": ["sailing"], "tones": ["terse"]}}}}
V3_CARD = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {
    "name": "Vera Lumen", "description": "A lighthouse keeper.", "personality": "steady", "scenario": "",
    "first_mes": "The light is on.", "mes_example": "", "nickname": "Vee", "group_only_greetings": ["All here?"],
    "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
    "creation_date": 1700000000, "extensions": {"depth_prompt": {"depth": 4, "prompt": "calm"}}}}


@pytest.fixture
def vault(tmp_path):
    return Vault.open(tmp_path / "v")


def write_json(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png(*extra: bytes) -> bytes:
    """A valid 1x1 8-bit grey PNG with `extra` chunks between IDAT and IEND."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\x00\x80"))  # filter byte 0, one grey pixel
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + b"".join(extra) + chunk(b"IEND", b"")


def b64(card: dict) -> bytes:
    return base64.b64encode(json.dumps(card).encode("utf-8"))


def text_chunk(keyword: str, card: dict, kind: bytes = b"tEXt") -> bytes:
    kw = keyword.encode("latin-1") + b"\0"
    if kind == b"tEXt":
        return chunk(b"tEXt", kw + b64(card))
    if kind == b"zTXt":
        return chunk(b"zTXt", kw + b"\0" + zlib.compress(b64(card)))
    return chunk(b"iTXt", kw + b"\1\0" + b"en\0" + b"\0" + zlib.compress(b64(card)))  # compressed iTXt


# --- built-ins ---


def test_builtins_load_and_are_distinct(vault):
    personas = list_personas(vault)
    assert [p.id for p in personas] == ["quill", "sage", "spark"]
    assert [p.name for p in personas] == ["Quill", "Sage", "Spark"]
    assert all(p.builtin and p.path is not None and p.path.exists() for p in personas)
    assert sorted(p.home["hotkey"] for p in personas) == ["f2", "f3", "f4"]
    assert len({p.data["system_prompt"] for p in personas}) == 3
    assert len({p.home["generation"]["temperature"] for p in personas}) == 3
    for p in personas:
        assert p.home["adapters"] == []
        assert p.home["tasks"] and p.home["tones"]
        assert p.data["system_prompt"].startswith(f"You are {p.name}")
        assert p.data["system_prompt"].count(". ") <= 2  # short enough for a 135M model to follow
        card = json.loads(p.path.read_text(encoding="utf-8"))
        assert card["spec"] == "chara_card_v2" and p.to_card() == card


def test_slug():
    assert slug("Captain Brisk") == "captain-brisk"
    assert slug("  R2_D2!! (v2) ") == "r2-d2-v2"
    assert slug("!!!") == ""


# --- import: JSON ---


def test_import_v2_keeps_unknown_extensions_and_home_settings(vault, tmp_path):
    p = import_card(vault, write_json(tmp_path / "card.json", V2_CARD))
    assert (p.id, p.name, p.builtin) == ("captain-brisk", "Captain Brisk", False)
    assert p.path == vault.personas_dir / "captain-brisk.json"
    assert p.home["adapters"] == [{"id": "sea-voice", "scale": 0.7}]
    saved = json.loads(p.path.read_text(encoding="utf-8"))
    assert saved["spec"] == "chara_card_v2" and saved["spec_version"] == "2.0"
    assert saved["data"]["extensions"]["other_app"] == {"x": 1}
    assert saved["data"]["alternate_greetings"] == [] and saved["data"]["system_prompt"] == ""
    assert stat.S_IMODE(p.path.stat().st_mode) == 0o600

    again = get_persona(vault, "captain-brisk")
    again.data["description"] = "Now calmer."
    assert save_persona(vault, again) == p.path
    reread = get_persona(vault, "Captain Brisk")
    assert reread.data["description"] == "Now calmer."
    assert reread.data["extensions"]["other_app"] == {"x": 1}
    assert stat.S_IMODE(p.path.stat().st_mode) == 0o600


def test_import_v1_flat_card(vault, tmp_path):
    v1 = {"name": "Old Timer", "description": "Remembers things.", "personality": "grumpy",
          "scenario": "a porch", "first_mes": "Eh?", "mes_example": "", "avatar": "none"}
    p = import_card(vault, write_json(tmp_path / "old.json", v1))
    assert p.id == "old-timer"
    assert {k: p.data[k] for k in ("description", "personality", "scenario", "first_mes")} == {
        "description": "Remembers things.", "personality": "grumpy", "scenario": "a porch", "first_mes": "Eh?"}
    assert p.data["avatar"] == "none" and p.data["extensions"] == {}
    assert json.loads(p.path.read_text())["spec"] == "chara_card_v2"


def test_import_pygmalion_style_v1(vault, tmp_path):
    old = {"char_name": "Pip", "char_persona": "A small robot.", "world_scenario": "a lab",
           "char_greeting": "Beep.", "example_dialogue": "<START>"}
    p = import_card(vault, write_json(tmp_path / "pip.json", old))
    assert (p.id, p.data["description"], p.data["scenario"], p.data["first_mes"]) == (
        "pip", "A small robot.", "a lab", "Beep.")


def test_import_v3_keeps_v3_fields(vault, tmp_path):
    p = import_card(vault, write_json(tmp_path / "v3.json", V3_CARD))
    saved = json.loads(p.path.read_text(encoding="utf-8"))
    assert saved["spec"] == "chara_card_v2"
    data = saved["data"]
    assert data["nickname"] == "Vee" and data["group_only_greetings"] == ["All here?"]
    assert data["assets"][0]["uri"] == "ccdefault:" and data["creation_date"] == 1700000000
    assert data["extensions"] == {"depth_prompt": {"depth": 4, "prompt": "calm"}}
    assert p.home == {}


# --- import: PNG ---


@pytest.mark.parametrize("kind", [b"tEXt", b"zTXt", b"iTXt"])
def test_import_png_chara_chunk(vault, tmp_path, kind):
    path = tmp_path / "card.png"
    path.write_bytes(png(text_chunk("chara", V2_CARD, kind)))
    p = import_card(vault, path)
    assert p.id == "captain-brisk" and p.data["extensions"]["other_app"] == {"x": 1}


def test_a_card_after_real_image_data(vault, tmp_path):
    """Card editors append the text after the image data (before IEND); it is found there, by keyword
    case-insensitively, the first chunk of a keyword winning."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 96), (200, 120, 40)).save(buf, "PNG")
    blob = buf.getvalue()
    extra = chunk(b"tEXt", b"Chara\0" + b64(V2_CARD)) + chunk(b"tEXt", b"chara\0ignored: the first one wins")
    (tmp_path / "card.png").write_bytes(blob[:-12] + extra + blob[-12:])
    assert import_card(vault, tmp_path / "card.png").id == "captain-brisk"


def test_import_png_prefers_ccv3(vault, tmp_path):
    path = tmp_path / "both.png"
    path.write_bytes(png(text_chunk("chara", V2_CARD), text_chunk("ccv3", V3_CARD)))
    p = import_card(vault, path)
    assert p.id == "vera-lumen" and p.data["nickname"] == "Vee"
    assert not (vault.personas_dir / "captain-brisk.json").exists()


# --- overwrite ---


def test_no_overwrite_without_flag_then_replace(vault, tmp_path):
    card = write_json(tmp_path / "card.json", V2_CARD)
    import_card(vault, card)
    target = vault.personas_dir / "captain-brisk.json"
    before = target.read_bytes()
    changed = json.loads(json.dumps(V2_CARD))
    changed["data"]["description"] = "A different captain."
    write_json(card, changed)
    with pytest.raises(PersonaError, match="already exists") as err:
        import_card(vault, card)
    assert "--overwrite" in str(err.value) and str(target) in str(err.value)
    assert target.read_bytes() == before
    p = import_card(vault, card, overwrite=True)
    assert p.data["description"] == "A different captain."
    assert json.loads(target.read_text())["data"]["description"] == "A different captain."


def test_builtin_id_collision_and_override(vault, tmp_path):
    card = write_json(tmp_path / "sage.json", {"name": "SAGE", "description": "My own sage."})
    with pytest.raises(PersonaError, match="'sage' already exists"):
        import_card(vault, card)
    assert list(vault.personas_dir.iterdir()) == []
    import_card(vault, card, overwrite=True)
    sage = get_persona(vault, "sage")
    assert not sage.builtin and sage.data["description"] == "My own sage."
    listed = {p.id: p for p in list_personas(vault)}
    assert len(listed) == 3 and not listed["sage"].builtin and listed["quill"].builtin


# --- bad input ---


def bad_home(**home):
    card = json.loads(json.dumps(V2_CARD))
    card["data"]["extensions"]["home"] = home
    return json.dumps(card).encode()


def flip_last_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0xFF])


BAD_INPUTS = {
    "not-json": (b'{"name": "x",\n  "description": oops}', "not valid JSON (line 2"),
    "empty": (b"", "empty"),
    "not-utf8": (b"\xff\xfe\x00{", "not UTF-8"),
    "list": (b'[{"name": "x"}]', "expected a JSON object"),
    "data-not-object": (b'{"spec": "chara_card_v2", "data": "x"}', "data: expected an object"),
    "unknown-spec": (b'{"spec": "chara_card_v9", "data": {}}', "spec: unsupported"),
    "no-name": (b'{"spec": "chara_card_v2", "data": {"description": "d"}}', "data.name: missing or empty"),
    "name-no-letters": (b'{"name": "!!!"}', "no letters or digits"),
    "description-type": (b'{"name": "x", "description": 3}', "description: expected a string, got 3"),
    "tags-type": (b'{"spec": "chara_card_v2", "data": {"name": "x", "tags": [1]}}', "data.tags[0]: expected a string"),
    "extensions-type": (b'{"name": "x", "extensions": []}', "extensions: expected an object"),
    "scale": (bad_home(adapters=[{"id": "a", "scale": "high"}]),
              'data.extensions.home.adapters[0].scale: expected a number, got "high"'),
    "adapter-id": (bad_home(adapters=[{"scale": 1.0}]), "home.adapters[0].id: expected an adapter id"),
    "adapters-type": (bad_home(adapters="a"), "home.adapters: expected a list"),
    "hotkey": (bad_home(hotkey=2), "home.hotkey: expected a string, got 2"),
    "gen-unknown": (bad_home(generation={"temprature": 0.5}), "home.generation.temprature: unknown setting"),
    "gen-type": (bad_home(generation={"top_k": 4.5}), "home.generation.top_k: expected an integer, got 4.5"),
    "gen-bool": (bad_home(generation={"temperature": True}), "home.generation.temperature: expected a number"),
    "gen-range": (bad_home(generation={"max_tokens": 0}), "home.generation.max_tokens: expected >= 1, got 0"),
    "tones": (bad_home(tones=["calm", 5]), "home.tones[1]: expected a string, got 5"),
    "png-truncated": (png(text_chunk("chara", V2_CARD))[:60], "truncated PNG"),
    "png-no-iend": (png(text_chunk("chara", V2_CARD))[:-12], "truncated PNG"),
    "png-no-card": (png(chunk(b"tEXt", b"Comment\0hello")), "no character card"),
    "png-bad-base64": (png(chunk(b"tEXt", b"chara\0!!not base64!!")), "'chara' chunk: not valid base64"),
    "png-base64-not-json": (png(chunk(b"tEXt", b"chara\0" + base64.b64encode(b"hello"))), "not valid JSON"),
    "png-bad-crc": (png(flip_last_byte(text_chunk("chara", V2_CARD))), "fails its CRC check"),
    "png-bad-zlib": (png(chunk(b"zTXt", b"chara\0\0not zlib")), "bad compressed data"),
    "png-bad-signature": (b"\x89PNX\r\n\x1a\n" + b"\0" * 20, "not a PNG"),
    "png-bad-chunk-type": (png(chunk(b"t\0Xt", b"chara\0x")), "corrupt PNG (no valid chunk type at byte 55)"),
    "png-zlib-bomb": (png(chunk(b"zTXt", b"chara\0\0" + zlib.compress(b"A" * (2 << 20)))), "zTXt chunk 'chara' at byte"),
    "png-itxt-not-utf8": (png(chunk(b"iTXt", b"chara\0\0\0en\0\0\xff\xfe")), "text that is not UTF-8"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_the_file(vault, tmp_path, case):
    blob, expected = BAD_INPUTS[case]
    path = tmp_path / (f"{case}.png" if case.startswith("png") else f"{case}.json")
    path.write_bytes(blob)
    with pytest.raises(PersonaError) as err:
        import_card(vault, path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "\n" not in message
    assert isinstance(err.value, VaultError) and err.value.exit_code == 2
    assert list(vault.personas_dir.iterdir()) == []


def test_missing_file(vault, tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(PersonaError, match="cannot read") as err:
        import_card(vault, path)
    assert str(path) in str(err.value)


# --- lookup ---


def test_get_persona_by_id_name_and_slug(vault, tmp_path):
    import_card(vault, write_json(tmp_path / "card.json", V2_CARD))
    assert get_persona(vault, "quill").id == "quill"
    assert get_persona(vault, "QUILL").id == "quill"
    assert get_persona(vault, "captain brisk").id == "captain-brisk"
    assert get_persona(vault, "Captain Brisk").id == "captain-brisk"
    # a card whose name does not slug to its file name is still found by its name
    write_json(vault.personas_dir / "mate.json", {"spec": "chara_card_v2", "data": {"name": "First Mate Ola"}})
    assert get_persona(vault, "first mate OLA").id == "mate"


def test_unknown_persona_lists_known(vault):
    with pytest.raises(PersonaError) as err:
        get_persona(vault, "nobody-here")
    message = str(err.value)
    assert "unknown persona 'nobody-here'" in message and "known:" in message
    assert "quill, sage, spark" in message


def test_broken_vault_card_is_reported_not_hidden(vault, tmp_path):
    import_card(vault, write_json(tmp_path / "card.json", V2_CARD))
    broken = vault.personas_dir / "broken.json"
    broken.write_text('{"name": "Broken",', encoding="utf-8")
    with pytest.raises(PersonaError) as err:
        list_personas(vault)
    assert str(broken) in str(err.value) and "line 1" in str(err.value)
    errors: list[str] = []
    assert [p.id for p in list_personas(vault, errors)] == ["captain-brisk", "quill", "sage", "spark"]
    assert len(errors) == 1 and str(broken) in errors[0]
    # asking for a good persona still works; an unknown one mentions the unreadable card
    assert get_persona(vault, "sage").builtin and get_persona(vault, "captain-brisk").id == "captain-brisk"
    with pytest.raises(PersonaError, match="unreadable: .*broken.json"):
        get_persona(vault, "nobody-here")
    # the broken card itself, asked for by id, is an error naming it
    with pytest.raises(PersonaError, match="broken.json"):
        get_persona(vault, "broken")


def test_temp_files_are_not_cards(vault):
    (vault.personas_dir / ".x.json").write_text("{", encoding="utf-8")
    assert len(list_personas(vault)) == 3


def test_save_persona_validates(vault):
    with pytest.raises(PersonaError, match="not a valid id"):
        save_persona(vault, Persona(id="../escape", data={"name": "x"}))
    bad = Persona(id="bad", data={"name": "Bad", "extensions": {"home": {"adapters": [{"id": "a", "scale": "x"}]}}})
    with pytest.raises(PersonaError, match=r"adapters\[0\]\.scale"):
        save_persona(vault, bad)
    assert list(vault.personas_dir.iterdir()) == []
    path = save_persona(vault, Persona(id="fresh", data={"name": "Fresh"}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert get_persona(vault, "fresh").data["extensions"] == {}
