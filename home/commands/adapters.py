"""`home adapters`: what is registered, and adding or removing GGUF LoRA adapters by hand.

Adapters are named by id (`hamlet-2`: that version) or by name (`hamlet`: its newest version); adding
under a name that exists adds its next version, as `home train` does."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from datetime import UTC, datetime

from home.context import Context
from llm.errors import AdapterError
from vault.fsio import atomic_write_bytes, ensure_private_dir
from vault.manifest import AdapterEntry, name_key
from vault.orphans import adapters_lock

KINDS = ("voice", "persona", "task", "style", "other")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapters", help="list, show, add or remove LoRA adapters",
                       description="The adapters in the vault's manifest.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="every registered adapter")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    show = verbs.add_parser("show", help="one adapter's manifest entry")
    show.add_argument("id", metavar="ID|NAME", help="an id (that version) or a name (its newest version)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)
    add = verbs.add_parser("add", help="check a GGUF LoRA against the model and register it",
                           description="Validate FILE.gguf against the loaded model (architecture, tensor "
                                       "names and shapes), copy it into the vault and register it.")
    add.add_argument("file", metavar="FILE.gguf")
    add.add_argument("--name", required=True,
                     help="a name; the first version's id is its slug, a name that exists gets its next "
                          "version (NAME-2, NAME-3, ...); one name, one kind")
    add.add_argument("--kind", choices=KINDS,
                     help="what it is for (default: the name's kind when it exists, else other)")
    add.add_argument("--tasks", nargs="*", default=[], metavar="TASK", help="tasks it serves (router)")
    add.add_argument("--tones", nargs="*", default=[], metavar="TONE", help="tones it serves (router)")
    add.add_argument("--scale", type=float, default=1.0, help="default scale (default 1.0)")
    add.add_argument("--owner", metavar="USER", help="whose adapter it is (default: the current user)")
    add.set_defaults(func=run_add)
    rm = verbs.add_parser("remove", help="unregister an adapter and delete its files from the vault",
                          description="Remove one version: an id names it, a name means its newest version "
                                      "(the one `--adapter NAME` picks; the previous version is then the "
                                      "newest). --all removes every version of the name.")
    rm.add_argument("id", metavar="ID|NAME")
    rm.add_argument("--all", action="store_true", help="every version of the name, not only the newest")
    rm.set_defaults(func=run_remove)
    voice = verbs.add_parser("voice", help="make a voice adapter your voice (e.g. a candidate the promotion gate kept)",
                             description="Set the current user's voice adapter by hand. A newly trained voice "
                                         "that was not at least as good as the one it would replace is registered "
                                         "as a candidate (its entry's `promotion` says why); this switches to it "
                                         "anyway, or back to an older version.")
    voice.add_argument("id", metavar="ID|NAME", help="a voice adapter: an id, or a name (its newest version)")
    voice.set_defaults(func=run_voice)
    from home.commands import adapters_prune

    adapters_prune.register(verbs)


def slug(name: str) -> str:
    """The name as ids spell it (`vault.manifest.name_key`, shared with the trainer), refusing a name
    with nothing to spell."""
    if not re.search(r"[a-z0-9]", name.lower()):
        raise AdapterError(f"--name {name!r}: needs at least one letter or digit")
    return name_key(name)


def run_list(args: argparse.Namespace) -> int:
    manifest = Context(args).manifest()
    entries = sorted(manifest.adapters.values(), key=lambda e: (name_key(e.name), e.version or 0, e.created, e.id))
    if args.json:
        print(json.dumps([{**e.to_dict(), "version": e.version} for e in entries], indent=2))
        return 0
    if not entries:
        print("no adapters registered (add one with `home adapters add FILE.gguf --name NAME`)")
        return 0
    newest = {name_key(e.name): e.id for e in entries}  # sorted oldest first: the last one wins
    print(f"{'NAME':<20} {'VERSION':>7}  {'ID':<24} {'KIND':<8} {'OWNER':<10} {'SCALE':>5}  {'RANK':>4}  BASE")
    for e in entries:
        base = (e.base or {}).get("name") or "?"
        version = f"{e.version or '-'}{'*' if newest[name_key(e.name)] == e.id else ' '}"
        print(f"{name_key(e.name):<20} {version:>7}  {e.id:<24} {e.kind:<8} {(e.owner or '-'):<10} "
              f"{e.scale:>5.2f}  {e.rank or '?':>4}  {base}")
    print("* the newest version: what the name picks (--adapter NAME, a card, eval, show, remove)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    manifest = Context(args).manifest()
    entry = manifest.adapter(args.id)
    data = entry.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key:>13}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llm.gguf_meta import check_adapter_fits, read_adapter_info

    ctx = Context(args)
    src = Path(args.file)
    if not src.is_file():
        raise AdapterError(f"{src}: no such file")
    info = read_adapter_info(src)
    model = ctx.model_info
    check_adapter_fits(model, info, src)
    key = slug(args.name)
    data = src.read_bytes()
    with adapters_lock(ctx.vault):  # a sweep by a starting trainer must not take this folder for an orphan
        manifest = ctx.manifest()
        versions = manifest.versions(args.name)
        kind = args.kind or (versions[-1].kind if versions else "other")
        manifest.check_name(args.name, kind)
        taken = (lambda i: (ctx.vault.adapters_dir / i).exists())  # noqa: E731 - a folder no entry names
        ident = key if not versions and key not in manifest.adapters and not taken(key) \
            else manifest.next_id(args.name, taken)
        dest_dir = ctx.vault.adapters_dir / ident
        ensure_private_dir(dest_dir)
        dest = dest_dir / "adapter.gguf"
        atomic_write_bytes(dest, data)
        entry = AdapterEntry(
            id=ident, name=args.name, file=str(dest.relative_to(ctx.vault.root)),
            sha256=hashlib.sha256(data).hexdigest(),
            base={"fingerprint": model.fingerprint, "name": model.name},
            owner=args.owner or ctx.user, kind=kind, tasks=list(args.tasks), tones=list(args.tones),
            scale=args.scale, rank=info.rank, alpha=info.alpha,
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        try:
            with ctx.manifests.update() as manifest:
                manifest.add_adapter(entry)
        except BaseException:
            shutil.rmtree(dest_dir, ignore_errors=True)
            raise
    version = f", version {entry.version} of '{key}'" if (entry.version or 1) > 1 else ""
    print(f"registered adapter '{ident}'{version} (rank {info.rank}, alpha {info.alpha:g}, "
          f"{len(info.tensors)} tensors)")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    ctx = Context(args)
    with ctx.manifests.update() as manifest:
        removed = manifest.remove_versions(args.id) if args.all else [manifest.remove_adapter(args.id)]
        left = manifest.versions(removed[0].name)
    for entry in removed:
        path = ctx.vault.root / entry.file
        if path.parent != ctx.vault.adapters_dir and path.parent.parent == ctx.vault.adapters_dir:
            shutil.rmtree(path.parent, ignore_errors=True)
        print(f"removed adapter '{entry.id}'")
    if left:
        print(f"'{name_key(removed[0].name)}' now means {left[-1].id}")
    return 0


def run_voice(args: argparse.Namespace) -> int:
    from llm.fingerprint import base_refusal

    ctx = Context(args)
    info = ctx.model_info
    with ctx.manifests.update() as manifest:
        entry = manifest.resolve(args.id)
        if entry.kind != "voice":
            raise AdapterError(f"adapter '{entry.id}' is of kind {entry.kind}, not a voice")
        why = base_refusal(entry.base, info.fingerprint, info.name)
        if why:
            raise AdapterError(why)
        user = manifest.ensure_user(ctx.user)
        before, user["voice_adapter"] = user.get("voice_adapter"), entry.id
    print(f"{ctx.user}'s voice is now {entry.id}" + (f" (was {before})" if before and before != entry.id else ""))
    return 0
