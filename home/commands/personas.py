"""`home personas`: the built-in and imported personas, and importing Character Cards."""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from home.context import Context
from vault.personas import Persona, get_persona, hotkeys, import_card, list_personas


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("personas", help="list, show or import personas (Character Card V2/V3)",
                       description="Personas are Character Card V2 files; Home's settings live under "
                                   "extensions.home (hotkey, adapters, generation, tasks, tones).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="every persona, built-in and imported")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    show = verbs.add_parser("show", help="one persona's card")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)
    imp = verbs.add_parser("import", help="import a card: JSON (V1/V2/V3) or PNG with a chara/ccv3 chunk")
    imp.add_argument("file")
    imp.add_argument("--overwrite", action="store_true", help="replace a persona with the same id")
    imp.set_defaults(func=run_import)
    sheets = verbs.add_parser(
        "from-sheets", help="make (or update) a persona from each markdown character sheet in a folder",
        description="Each sheet (markdown: '# Name', then sections such as Traits, Speech habits, Background, "
                    "Relationships, Goals, Conflicts, Scenario, Greeting, Example dialogue; unknown sections "
                    "are kept) becomes personas/<id>.json. Re-running updates the same personas and keeps "
                    "their adapters and hotkeys. The sheet is indexed in memory as the persona's lore.")
    sheets.add_argument("folder", metavar="DIR")
    sheets.add_argument("--no-lore", action="store_true", help="do not index the sheets in memory")
    sheets.set_defaults(func=run_from_sheets)


def run_list(args: argparse.Namespace) -> int:
    personas = list_personas(Context(args).vault)
    if args.json:
        print(json.dumps([{"id": p.id, "name": p.name, "builtin": p.builtin, "hotkey": p.home.get("hotkey"),
                           "adapters": p.home.get("adapters", [])} for p in personas], indent=2))
        return 0
    # the columns named, as `adapters list` does ("f3 built-in base" told a new user little), and the
    # description cut to the terminal: at 80 columns every line wrapped
    print(f"{'ID':<16} {'KEY':<6} {'FROM':<9} {'ADAPTERS':<24} DESCRIPTION")
    room = max(20, shutil.get_terminal_size().columns - 59)
    for p in personas:
        key = p.home.get("hotkey") or "-"
        stack = ", ".join(f"{a['id']}:{a.get('scale', 1.0)}" for a in p.home.get("adapters", [])) or "base"
        origin = "built-in" if p.builtin else "vault"
        print(f"{p.id:<16} {key:<6} {origin:<9} {stack:<24} {_first_line(p.data.get('description', ''), room)}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    p = get_persona(Context(args).vault, args.name)
    if args.json:
        print(json.dumps({"id": p.id, "builtin": p.builtin, "data": p.data}, indent=2, ensure_ascii=False))
        return 0
    print(f"{p.name}  ({p.id}, {'built-in' if p.builtin else 'vault'})")
    for key in ("description", "personality", "scenario", "first_mes", "system_prompt"):
        if p.data.get(key):
            print(f"\n{key}:\n  {p.data[key]}")
    print(f"\nhome settings: {json.dumps(p.home)}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """The card file is the persona; the manifest lists it (with where it came from) for the router."""
    from vault.manifest import now_iso

    ctx = Context(args)
    ctx.manifest()  # a broken manifest is reported before anything is written
    persona = import_card(ctx.vault, args.file, overwrite=args.overwrite)
    with ctx.manifests.update() as manifest:
        manifest.personas[persona.id] = {"id": persona.id, "file": f"personas/{persona.id}.json",
                                         "source": str(args.file), "imported": now_iso()}
    print(f"imported persona '{persona.id}' ({persona.name})")
    key = persona.home.get("hotkey")
    everyone = list_personas(ctx.vault, [])
    others = [p.id for p in everyone if key and p.home.get("hotkey") == key and p.id != persona.id]
    if key == "f1" or others:  # said, not refused: the card is the user's to edit
        picks = "the base model" if key == "f1" else hotkeys(everyone)[key]
        also = f"also {', '.join(others)}'s" if others else "the base model's"
        print(f"home: note: hotkey {key} is {also}; in the app it picks {picks}. Give one of them another "
              f"extensions.home.hotkey", file=sys.stderr)
    return 0


def run_from_sheets(args: argparse.Namespace) -> int:
    """All sheets are read and checked before anything is written: one bad sheet changes nothing."""
    from vault.manifest import now_iso
    from vault.personas import read_card, save_persona
    from vault.sheets import SheetError, card_data, find_sheets, read_sheet

    ctx = Context(args)
    ctx.manifest()  # a broken manifest is reported before anything is written
    sheets = [read_sheet(path) for path in find_sheets(args.folder)]
    seen: dict[str, str] = {}
    for sheet in sheets:
        if sheet.id in seen:
            raise SheetError(f"{sheet.path}: name '{sheet.name}' gives id '{sheet.id}', as {seen[sheet.id]} does")
        seen[sheet.id] = str(sheet.path)
    store = None if args.no_lore else _open_memory(ctx)
    try:
        for sheet in sheets:
            path = ctx.vault.personas_dir / f"{sheet.id}.json"
            existing = Persona(sheet.id, read_card(path)) if path.exists() else None
            persona = Persona(sheet.id, card_data(sheet, existing))
            lore = ""
            if store is not None:
                from vault.lore import index_lore

                info = persona.home["sheet"]
                info["lore_ids"] = index_lore(store, sheet.id, sheet, info["lore_ids"], ctx.user)
                lore = f", lore: {len(info['lore_ids'])} memory items"
            save_persona(ctx.vault, persona)
            with ctx.manifests.update() as manifest:
                manifest.personas[sheet.id] = {"id": sheet.id, "file": f"personas/{sheet.id}.json",
                                               "source": str(sheet.path), "imported": now_iso()}
            known = sum(1 for s in sheet.sections if s.key)
            print(f"{'updated' if existing else 'created'} persona '{sheet.id}' ({sheet.name}) from "
                  f"{sheet.path.name}: {known} sections, {len(sheet.sections) - known} kept as written, "
                  f"{len(sheet.relationships())} relationships{lore}")
    finally:
        if store is not None:
            store.close()
    return 0


def _open_memory(ctx: Context):
    """The memory store, or None (one line on stderr) when another process owns it: personas still get made."""
    import sys

    from vault.memory import MemoryBusyError, MemoryStore

    try:
        return MemoryStore.open(ctx.vault)
    except MemoryBusyError as exc:
        print(f"home: note: {exc}; lore not indexed (run `home personas from-sheets` again when it is free)",
              file=sys.stderr)
        return None


def _first_line(text: str, width: int = 60) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
