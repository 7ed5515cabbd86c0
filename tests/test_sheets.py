"""vault/sheets.py + `home personas from-sheets`: markdown character sheets → personas, lore in memory.

The three sheets in tests/fixtures/sheets are written in three different styles on purpose (front matter,
`Key: value` lines under the title, other heading names), so the tolerant parser is tested on each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli_helpers import one_error_line, run_home
from vault.layout import Vault
from vault.personas import get_persona
from vault.sheets import SheetError, card_data, find_sheets, mes_example, read_sheet, split_entity

SHEETS = Path(__file__).parent / "fixtures" / "sheets"
BAD = Path(__file__).parent / "fixtures" / "sheets_bad"


def test_three_styles_parse_into_the_same_sections():
    sheets = {s.id: s for s in map(read_sheet, find_sheets(SHEETS))}
    assert sorted(sheets) == ["barnaby-fitch", "juniper-okafor", "wren-alder"]
    for s in sheets.values():
        keys = {sec.key for sec in s.sections}
        assert {"summary", "traits", "speech", "background", "relationships", "goals", "conflicts"} <= keys, s.id
        assert len(s.items("goals")) == 2 and len(s.items("conflicts")) == 2
    wren, barnaby, juni = sheets["wren-alder"], sheets["barnaby-fitch"], sheets["juniper-okafor"]
    assert wren.meta["hotkey"] == "f6" and barnaby.meta["hotkey"] == "f7" and "hotkey" not in juni.meta
    assert wren.relationships() == [
        ("Barnaby Fitch", "the bookseller on the mainland who buys her old sea charts and talks too much."),
        ("Juniper Okafor", "niece: visits every summer and keeps trying to automate the lamp."),
        ("Orla", "the ferry captain, her oldest friend.")]
    assert juni.relationships()[0] == ("Wren Alder", "aunt: gruff, amazing, refuses to let Juni automate the lamp.")
    # prose goals (no bullets) split into sentences
    assert juni.items("goals") == ["Build a lamp controller so good that the harbour board leaves Aunt Wren alone.",
                                   "Get into engineering school."]
    [unknown] = [sec for sec in barnaby.sections if sec.key is None]
    assert unknown.title == "Favourite things" and "semicolons" in unknown.text


def test_card_fields_come_from_the_sections():
    data = card_data(read_sheet(SHEETS / "wren-alder.md"))
    assert data["name"] == "Wren Alder"
    assert data["description"].startswith("Keeper of the Skerry Point light")
    assert "Background: Wren took over the light" in data["description"]
    assert "Terse and practical" in data["personality"] and "Speech: Short sentences." in data["personality"]
    assert data["scenario"].startswith("A stormy night")
    assert data["first_mes"].startswith("Door's heavy.")
    assert data["mes_example"] == ("<START>\n{{user}}: Is the storm going to pass?\n"
                                   "{{char}}: By morning. Wind's backing west. Sit down, dry your boots.")
    assert data["system_prompt"].startswith("You are {{char}}.") and "Mind the tide" in data["system_prompt"]
    assert data["tags"] == ["coast", "lighthouse", "keeper"]
    home = data["extensions"]["home"]
    assert home["hotkey"] == "f6" and home["adapters"] == []
    sheet = home["sheet"]
    assert sheet["file"].endswith("wren-alder.md") and len(sheet["sha256"]) == 64
    assert [r["name"] for r in sheet["relationships"]] == ["Barnaby Fitch", "Juniper Okafor", "Orla"]
    assert sheet["goals"][1] == "Finish the storm log her father started in 1961."
    # an unknown section goes into the description too, under its own title
    assert "Favourite things: Foxed paper" in card_data(read_sheet(SHEETS / "barnaby-fitch.md"))["description"]


def test_tolerant_format(tmp_path):
    sheet = tmp_path / "odd.md"
    sheet.write_bytes(("\ufeff# **Mira Holt**\r\nName: Mira Holt\r\ntags: one, two\r\n\r\nA cartographer.\r\n"
                       "# Personality:\r\nCalm.\r\n### Quirk\r\nHums.\r\n## GOALS!\r\nMap the valley. Find Tam.\r\n"
                       "## Secret recipes\r\nSoup.\r\n## Example Dialogue\r\n- User: hi\r\n- Mira: Hello.\r\n"
                       ).encode("utf-8"))
    s = read_sheet(sheet)
    assert s.name == "Mira Holt" and s.meta["tags"] == "one, two"
    assert [(x.key, x.text) for x in s.sections] == [
        ("summary", "A cartographer."), ("traits", "Calm.\n### Quirk\nHums."),
        ("goals", "Map the valley. Find Tam."), (None, "Soup."), ("examples", "- User: hi\n- Mira: Hello.")]
    assert s.items("goals") == ["Map the valley.", "Find Tam."]
    assert mes_example(s.get("examples"), s.name) == "<START>\n{{user}}: hi\n{{char}}: Hello."
    assert split_entity("Tam Holt (brother) - lost at sea") == ("Tam Holt", "brother: lost at sea")
    assert split_entity("a sentence without any person in it") == ("", "a sentence without any person in it")


@pytest.mark.parametrize("content, why", [
    (b"", "empty file"),
    (b"\x00\x01binary", "binary file"),
    (b"\xff\xfe bad", "not UTF-8"),
    (b"Notes.\n\n## Traits\nQuiet.\n", "no name: start the sheet with '# Name'"),
    (b"---\nname: X\n", ":1: front matter: no closing '---' line"),
    (b"---\nname: X\njust words\n---\n", ":3: front matter: expected 'key: value'"),
    (b"# !!!\n\nText.\n", "has no letters or digits"),
    (b"# Lonely\n", "has a name but no text"),
])
def test_bad_sheets_name_the_file_and_what_is_missing(tmp_path, content, why):
    path = tmp_path / "bad.md"
    path.write_bytes(content)
    with pytest.raises(SheetError) as err:
        read_sheet(path)
    assert str(err.value).startswith(str(path)) and why in str(err.value)


def _personas(vault: Path) -> list[str]:
    return sorted(p.name for p in (vault / "personas").glob("*.json"))


def test_from_sheets_makes_personas_then_updates_them_with_lore_in_memory(tmp_path):
    from vault.memory import MemoryStore

    vault, sheets = tmp_path / "v", tmp_path / "sheets"
    shutil.copytree(SHEETS, sheets)
    proc = run_home(vault, "--user", "bo", "personas", "from-sheets", str(sheets))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("created persona") == 3 and "lore: 10 memory items" in proc.stdout
    assert _personas(vault) == ["barnaby-fitch.json", "juniper-okafor.json", "wren-alder.json"]
    manifest = json.loads((vault / "manifest.json").read_text())
    assert manifest["personas"]["wren-alder"]["source"] == str(sheets / "wren-alder.md")
    assert oct((vault / "personas" / "wren-alder.json").stat().st_mode & 0o777) == "0o600"

    v = Vault.open(vault)
    with MemoryStore.open(v) as store:
        assert store.count() == 26
        hits = store.search("who wants to automate the lamp?", k=3)
        assert hits and hits[0].id.startswith("lore-") and "lamp" in hits[0].text
        assert store.search("who wants to automate the lamp?", k=3, user="bo")  # the turn path searches per user
        hits = store.search("the landlord's nephew and the rent", k=3)
        assert hits and hits[0].id.startswith("lore-barnaby-fitch:") and "nephew" in hits[0].text

    # The trainer points the persona at its adapter; re-running the sheets keeps that, and a section
    # dropped from a sheet leaves memory too. Same ids: updated, never duplicated.
    persona = get_persona(v, "wren-alder")
    persona.data["extensions"]["home"]["adapters"] = [{"id": "wren-alder-persona-1", "scale": 1.0}]
    persona.data["extensions"]["other_app"] = {"kept": True}
    from vault.personas import save_persona

    save_persona(v, persona)
    text = (sheets / "wren-alder.md").read_text()
    (sheets / "wren-alder.md").write_text(text.split("## Scenario")[0].replace("Fifty-eight", "Fifty-nine"))
    again = run_home(vault, "personas", "from-sheets", str(sheets))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("updated persona") == 3 and "lore: 7 memory items" in again.stdout
    assert _personas(vault) == ["barnaby-fitch.json", "juniper-okafor.json", "wren-alder.json"]
    wren = get_persona(v, "wren-alder")
    assert wren.home["adapters"] == [{"id": "wren-alder-persona-1", "scale": 1.0}]
    assert wren.data["extensions"]["other_app"] == {"kept": True}
    assert "Fifty-nine" in wren.data["description"] and wren.data["scenario"] == ""
    with MemoryStore.open(v) as store:
        assert store.count() == 23  # 26 - 3 sections removed
        assert store.get("lore-wren-alder:8") is None and "Fifty-nine" in store.get("lore-wren-alder:1").text


def test_busy_memory_is_one_line_and_the_personas_are_still_made(tmp_path):
    from vault.memory import MemoryStore

    vault = tmp_path / "v"
    with MemoryStore.open(Vault.open(vault)):  # as the running app would hold it
        proc = run_home(vault, "personas", "from-sheets", str(SHEETS))
    assert proc.returncode == 0, proc.stderr
    [note] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert note.startswith("home: note: ") and "in use by another Home process" in note and "lore not indexed" in note
    assert len(_personas(vault)) == 3 and "lore" not in proc.stdout


def test_a_bad_sheet_changes_nothing(tmp_path):
    vault = tmp_path / "v"
    proc = run_home(vault, "personas", "from-sheets", str(BAD))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert str(BAD / "nameless.md") in line and "no name" in line
    assert _personas(vault) == []  # wren-alder.md was fine, but nothing is written when one sheet is bad

    twins = tmp_path / "twins"
    twins.mkdir()
    shutil.copy(SHEETS / "wren-alder.md", twins / "a.md")
    shutil.copy(SHEETS / "wren-alder.md", twins / "b.md")
    proc = run_home(vault, "personas", "from-sheets", str(twins))
    assert proc.returncode == 2 and "gives id 'wren-alder', as" in one_error_line(proc)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no character sheets" in one_error_line(run_home(vault, "personas", "from-sheets", str(empty)))
