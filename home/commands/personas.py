"""`home personas`: the built-in and imported personas, and importing Character Cards."""

from __future__ import annotations

import argparse
import json

from home.context import Context
from vault.personas import get_persona, import_card, list_personas


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


def run_list(args: argparse.Namespace) -> int:
    personas = list_personas(Context(args).vault)
    if args.json:
        print(json.dumps([{"id": p.id, "name": p.name, "builtin": p.builtin, "hotkey": p.home.get("hotkey"),
                           "adapters": p.home.get("adapters", [])} for p in personas], indent=2))
        return 0
    for p in personas:
        key = p.home.get("hotkey") or "-"
        stack = ", ".join(f"{a['id']}:{a.get('scale', 1.0)}" for a in p.home.get("adapters", [])) or "base"
        origin = "built-in" if p.builtin else "vault"
        print(f"{p.id:<16} {key:<6} {origin:<9} {stack:<24} {_first_line(p.data.get('description', ''))}")
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
    return 0


def _first_line(text: str, width: int = 60) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
