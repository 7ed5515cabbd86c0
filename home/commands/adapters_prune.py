"""`home adapters prune`: remove old versions of adapters, keeping each name's newest K.

Why: every retraining registers a version and keeps the earlier ones (so the user can go back), and
nothing ever removed them short of naming each one: a voice retrained weekly for three years is 156
versions, 24 MB each on the default model (the GGUF and its peft copy), hundreds on an 8B. Never removed,
whatever K: a version in reach (each name's newest, a user's voice, what those are trained over or
stacked with: `Manifest.in_reach`), one a persona card names, and one another kept adapter is built on.
"""

from __future__ import annotations

import argparse
import shutil

from home.commands import positive_int
from home.context import Context
from vault.errors import ManifestError
from vault.manifest import AdapterEntry, Manifest, name_key
from vault.orphans import adapters_lock


def register(verbs: argparse._SubParsersAction) -> None:
    pr = verbs.add_parser("prune", help="remove old versions, keeping each name's newest K",
                          description="Remove every version of each name (or of NAME) but its newest K, and "
                                      "their files. Your voice, what a persona card names and what a kept "
                                      "adapter is built on are always kept.")
    pr.add_argument("name", nargs="?", metavar="NAME", help="only this name's versions (default: every name)")
    pr.add_argument("--keep", type=positive_int, default=3, metavar="K", help="newest versions kept per name (default 3)")
    pr.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    pr.set_defaults(func=run_prune)


def card_ids(ctx: Context, manifest: Manifest) -> set[str]:
    """The adapters persona cards name (a name: its newest version), which a prune must keep."""
    from vault.personas import list_personas

    out = set()
    for persona in list_personas(ctx.vault, []):
        for item in persona.home.get("adapters", []):
            try:
                out.add(manifest.resolve(str(item.get("id"))).id)
            except (ManifestError, AttributeError):
                continue
    return out


def prunable(manifest: Manifest, keep: int, name: str | None = None, protect: set[str] = frozenset()) -> list[AdapterEntry]:
    """Versions past each name's newest `keep`, newest first (one built on another goes before it)."""
    key = name_key(manifest.resolve(name).name) if name else None
    names = {name_key(e.name) for e in manifest.adapters.values()} if key is None else {key}
    keep_ids = manifest.in_reach() | set(protect)
    out = []
    for n in sorted(names):
        versions = manifest.versions(n)
        out += [e for e in reversed(versions[:max(0, len(versions) - keep)]) if e.id not in keep_ids]
    return out


def _folder_bytes(ctx: Context, entry: AdapterEntry) -> int:
    folder = (ctx.vault.root / entry.file).parent
    if folder.parent != ctx.vault.adapters_dir:
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_prune(args: argparse.Namespace) -> int:
    ctx = Context(args)
    if args.dry_run:
        manifest = ctx.manifests.read()
        gone = [(e, _folder_bytes(ctx, e)) for e in prunable(manifest, args.keep, args.name, card_ids(ctx, manifest))]
        return _report(gone, [], "would remove")
    removed: list[tuple[AdapterEntry, int]] = []
    kept: list[str] = []
    with adapters_lock(ctx.vault):  # every writer of adapters/ holds it (vault/orphans.py)
        with ctx.manifests.update() as manifest:
            for entry in prunable(manifest, args.keep, args.name, card_ids(ctx, manifest)):
                try:
                    manifest.remove_adapter(entry.id)
                except ManifestError as exc:  # a kept adapter is built on it
                    kept.append(str(exc).splitlines()[0])
                    continue
                removed.append((entry, _folder_bytes(ctx, entry)))
        for entry, _ in removed:  # unregistered first: a kill in between leaves orphans, swept as usual
            folder = (ctx.vault.root / entry.file).parent
            if folder.parent == ctx.vault.adapters_dir:
                shutil.rmtree(folder, ignore_errors=True)
    return _report(removed, kept, "removed")


def _report(removed: list[tuple[AdapterEntry, int]], kept: list[str], verb: str) -> int:
    for entry, size in removed:
        print(f"{verb} {entry.id} ({size / 1e6:.1f} MB)")
    for line in kept:
        print(f"kept: {line}")
    total = sum(s for _, s in removed) / 1e6
    print(f"{len(removed)} old versions: {verb} {total:.1f} MB" if removed else "nothing to prune")
    return 0
