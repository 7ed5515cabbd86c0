"""`home gestalts`: what Home believes about you, as files you can read, correct and delete.

Gestalts are distilled from your conversations by the base model (home/distil.py) and kept one per file
in `<vault>/gestalts/<user>/` (vault/gestalts.py). After a change, memory is re-synced here when no other
process owns it; while the chat app runs, its watcher picks the change up instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys

from home.context import Context
from home.errors import UsageError
from vault import gestalts as gs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gestalts", help="list, show, edit or forget what Home knows about you",
                       description="Gestalts: durable facts and preferences distilled from your conversations, "
                                   "one markdown file each in <vault>/gestalts/<user>/. Edit or delete the files "
                                   "freely; memory follows.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="every gestalt of the user, oldest first")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    show = verbs.add_parser("show", help="one gestalt's file")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)
    edit = verbs.add_parser("edit", help="open a gestalt in $VISUAL / $EDITOR; it is checked before it is saved",
                            description="Edits a copy; a copy that does not parse is kept (and reopened next "
                                        "time) and the gestalt stays as it was.")
    edit.add_argument("id")
    edit.set_defaults(func=run_edit)
    forget = verbs.add_parser("forget", help="delete a gestalt; it is not distilled again")
    forget.add_argument("id")
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(func=run_forget)
    distil = verbs.add_parser("distil", help="distil gestalts from a session now (default: the latest)",
                              description="The base model (no adapters) reads your own turns of the session "
                                          "and proposes facts; only those its source turn supports are kept.")
    distil.add_argument("--session", metavar="ID", help="the session to read (default: the latest)")
    distil.add_argument("--json", action="store_true", help="the summary, the new gestalts and every candidate")
    distil.set_defaults(func=run_distil)


def _line(g: gs.Gestalt) -> str:
    text = " ".join(g.text.split())
    text = text if len(text) <= 90 else text[:89] + "…"
    return f"{g.id:<14} {g.kind:<11} {g.said[:10]}  {text}"


def _warn(problems) -> None:
    for p in problems:
        print(f"home: warning: skipped {p}", file=sys.stderr)


def _sync_memory(ctx: Context) -> str:
    """Re-sync memory now, or say who will."""
    from vault.memory import MemoryBusyError, MemoryStore, sync_gestalts

    if not ctx.config.memory.enabled:
        return ""
    try:
        with MemoryStore.open(ctx.vault) as store:
            r = sync_gestalts(ctx.vault, store)
    except MemoryBusyError:
        return "memory: the running app re-indexes it"
    return f"memory: {r.added} added, {r.changed} changed, {r.removed} removed"


def run_list(args: argparse.Namespace) -> int:
    ctx = Context(args)
    listing = gs.list_gestalts(ctx.vault, ctx.user)
    _warn(listing.problems)
    if args.json:
        print(json.dumps([g.to_dict() for g in listing.gestalts], indent=2, ensure_ascii=False))
    elif not listing.gestalts:
        print(f"no gestalts for {ctx.user} yet: they are distilled from your conversations "
              "(`home gestalts distil`), or write one in " + str(ctx.vault.gestalts_dir / ctx.user))
    else:
        for g in listing.gestalts:
            print(_line(g))
    return 0


def run_show(args: argparse.Namespace) -> int:
    ctx = Context(args)
    g = gs.get_gestalt(ctx.vault, ctx.user, args.id)
    if args.json:
        print(json.dumps(g.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(f"# {g.path}")
        sys.stdout.write(g.path.read_text("utf-8"))
    return 0


def _editor() -> list[str]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor and editor.strip():
        return shlex.split(editor)
    for name in ("editor", "nano", "vi"):
        if shutil.which(name):
            return [name]
    raise UsageError("no editor: set $EDITOR (e.g. EDITOR=nano)")


def run_edit(args: argparse.Namespace) -> int:
    from vault.fsio import atomic_write_text

    ctx = Context(args)
    path = gs.user_dir(ctx.vault, ctx.user) / f"{args.id}.md"
    if not path.is_file():
        gs.get_gestalt(ctx.vault, ctx.user, args.id)  # raises: unknown id, naming the folder it looked in
    draft = path.with_name(f".{path.stem}.edit.md")  # a dotfile: the watcher and listings skip it
    if draft.exists():
        print(f"reopening your unsaved edit {draft}", file=sys.stderr)
    else:
        atomic_write_text(draft, path.read_text("utf-8", errors="replace"))
    editor = _editor()
    try:
        code = subprocess.run([*editor, str(draft)]).returncode
    except OSError as exc:
        raise UsageError(f"cannot run the editor {editor[0]!r} ({exc.strerror or exc}); set $EDITOR") from None
    if code != 0:
        draft.unlink(missing_ok=True)
        print(f"the editor exited with {code}: {args.id} is unchanged", file=sys.stderr)
        return 1
    try:
        new = gs.save_edit(ctx.vault, ctx.user, args.id, draft.read_text("utf-8", errors="replace"), draft)
    except gs.GestaltError as exc:
        raise gs.GestaltError(f"{exc}; {args.id} is unchanged, your edit is kept in {draft} and reopens with "
                              f"`home gestalts edit {args.id}`") from None
    draft.unlink(missing_ok=True)
    if new is None:
        print(f"{args.id}: unchanged")
        return 0
    note = _sync_memory(ctx)
    print(f"saved {_line(new)}" + (f" ({note})" if note else ""))
    return 0


def run_forget(args: argparse.Namespace) -> int:
    ctx = Context(args)
    g = gs.forget_gestalt(ctx.vault, ctx.user, args.id)
    note = _sync_memory(ctx)
    if args.json:
        print(json.dumps({"forgotten": args.id, "text": g.text if g else None}))
    else:
        print(f"forgot {args.id}" + (f": {' '.join(g.text.split())}" if g else "") + (f" ({note})" if note else ""))
    return 0


def run_distil(args: argparse.Namespace) -> int:
    from home.distil import distil_session
    from vault.errors import LogError
    from vault.logs import ConversationLog, list_sessions

    ctx = Context(args)
    sid = args.session
    if sid is None:
        sessions = list_sessions(ctx.vault)
        if not sessions:
            raise LogError(f"no sessions to distil in {ctx.vault.logs_dir}")
        sid = sessions[0].id
    records = ConversationLog.open(ctx.vault, sid).records()
    result = distil_session(ctx.engine(), ctx.vault, ctx.user, records)
    note = _sync_memory(ctx) if result.new else ""
    if args.json:
        print(json.dumps({"session": sid, **result.summary(), "gestalts": [g.to_dict() for g in result.new],
                          "candidates": [vars(c) for c in result.candidates]}, indent=2, ensure_ascii=False))
        return 0
    for g in result.new:
        print("+ " + _line(g))
    s = result.summary()
    known = len(result.grounded) - len(result.new)
    turns = f"{s['turns']} turn{'s' * (s['turns'] != 1)}"
    print(f"session {sid}: {turns} of yours, {s['asked']} read for facts, {s['grounded']} grounded, "
          f"{s['new']} new" + (f" ({known} already known or forgotten)" if known else "")
          + f" in {s['seconds']:.1f} s" + (f"; {note}" if note else ""))
    return 0
