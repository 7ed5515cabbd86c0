"""`home memory`: search, forget, rebuild and inspect the long-term memory built from the conversation logs.

The store is derived data (vault/memory.py): `search` first catches up with turns logged since the last
run, `reindex --rebuild` re-embeds everything from the logs. While the app owns the store, `search` reads
it read-only (vault/memory_reader.py) and indexes nothing; `forget`, `reindex` and `stats` are refused.
`forget` is the user's right to have a turn dropped: it is marked excluded in its log (vault/forget.py),
then leaves the store, so neither memory nor training uses it; the gestalts learnt from it alone go with
it, and the output says how many. A session summary (`summary:<session>`) is forgotten as the turns it
holds, each listed.
"""

from __future__ import annotations

import argparse
import json
import sys

from home.context import Context
from home.errors import UsageError, require_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("memory", help="search, forget or rebuild long-term memory",
                       description="Long-term memory: every logged turn, searchable by meaning and by words. "
                                   "The logs are the source of truth; the index is rebuilt from them.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    search = verbs.add_parser("search", help="what memory recalls for a query (as the chat would)")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, metavar="N", help="how many hits (default 5)")
    search.add_argument("--json", action="store_true")
    search.add_argument("--no-index", action="store_true", help="do not index new turns first")
    search.set_defaults(func=run_search)
    forget = verbs.add_parser("forget", help="drop turns from memory and exclude them from training",
                              description="Delete turns from memory and log an exclude event in their "
                                          "session, so they are never indexed or trained on again; the "
                                          "gestalts learnt from them alone go with them (one still backed "
                                          "by a turn not forgotten stays).")
    which = forget.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="a memory id, <session>:<turn> or summary:<session> (as `search` "
                       "prints; a summary: the turns it holds)")
    which.add_argument("--query", metavar="Q", help="forget the best hits for Q instead")
    forget.add_argument("-k", type=int, default=1, metavar="N", help="with --query: how many hits (default 1)")
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(func=run_forget)
    re = verbs.add_parser("reindex", help="index turns logged since the last run, or rebuild from the logs")
    re.add_argument("--rebuild", action="store_true", help="empty the index and re-embed every turn")
    re.add_argument("--embedder", metavar="DIR",
                    help="with --rebuild: a sentence-transformers model folder (default: bundled all-MiniLM-L6-v2)")
    re.set_defaults(func=run_reindex)
    stats = verbs.add_parser("stats", help="how much is remembered, and where")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=run_stats)


def _open(ctx: Context, embedder=None):
    from vault.memory import MemoryStore

    return MemoryStore.open(ctx.vault, embedder)


def _summaries(ctx: Context):  # noqa: ANN202
    """The session summariser when the vault's `[memory] summaries` is on, else None: as the app's indexer
    (home/recall.py), so a catch-up or rebuild here makes the summaries the app would."""
    from vault.session_summary import extract

    return extract if ctx.config.memory.summaries else None


def _catch_up(ctx: Context, store) -> None:
    from vault.memory import index_logs, sync_gestalts

    index_logs(ctx.vault, store, summaries=_summaries(ctx))
    sync_gestalts(ctx.vault, store)  # gestalt files edited or deleted while no app was watching


READ_ONLY_NOTE = ("home: note: searched memory read-only beside the running app; turns from the last few "
                  "seconds may not be indexed yet")
NEWER_NOTE = "* newer than a near-equal turn below it, so ranked first: a restated fact supersedes the old one"


def render_hits(hits) -> list[str]:  # noqa: ANN001 - vault.retrieval.Hit
    """The table `memory search` prints. The order is fused score with the newer of near-equal turns first
    (vault/retrieval.py, step 4), so a score can sit above a higher one; such a hit is marked and the mark
    explained, where bare numbers read as a wrong order."""
    lines = [f"{'ID (home memory forget ID)':<32} {'SCORE':>5}   {'DATE':<10}  {'WHO':<9}  TEXT"]
    promoted = False
    for i, hit in enumerate(hits):
        mark = "*" if any(hit.score < later.score for later in hits[i + 1:]) else " "
        promoted |= mark == "*"
        text = " ".join(hit.text.split())
        text = text if len(text) <= 100 else text[:99] + "…"
        lines.append(f"{hit.id:<32} {hit.score:5.2f}{mark}  {hit.time[:10]}  {hit.role:<9}  {text}")
    return [*lines, NEWER_NOTE] if promoted else lines


def run_search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise UsageError("-k: expected a positive number")
    require_text(args.query, 'home memory search "where does my sister live"')
    ctx = Context(args)
    from vault.memory import MemoryBusyError

    try:
        store, beside = _open(ctx), False
    except MemoryBusyError:  # the app owns the store: search it read-only, never index or write
        from vault.memory_reader import MemoryReader

        store, beside = MemoryReader(ctx.vault), True
    with store:
        if not args.no_index and not beside:
            _catch_up(ctx, store)
        hits = store.search(args.query, k=args.k, user=getattr(args, "user", None))
        empty = not hits and store.count() == 0
    if beside:
        print(READ_ONLY_NOTE, file=sys.stderr)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
    elif empty:  # a new vault: say why nothing came back, not that nothing was close
        print(f"memory is empty: nothing is logged in {ctx.vault.logs_dir} yet (chat with `home` or `home ask`)")
    elif not hits:
        print("nothing in memory is close enough to that")
    else:  # the columns named: the first is what `home memory forget` takes, which nothing said
        print("\n".join(render_hits(hits)))
    return 0


def run_forget(args: argparse.Namespace) -> int:
    from vault.forget import forget

    if args.k < 1:
        raise UsageError("-k: expected a positive number")
    ctx = Context(args)
    if args.query is None:
        done = _forget_id(ctx, args.id)
    else:
        with _open(ctx) as store:
            _catch_up(ctx, store)
            hits = store.search(args.query, k=args.k, user=getattr(args, "user", None))
            if not hits:
                from vault.memory import MemoryStoreError

                raise MemoryStoreError(f"nothing in memory matches {args.query!r}: nothing forgotten")
            done = forget(ctx.vault, [h.id for h in hits], store=store)
    if args.json:
        print(json.dumps({"forgotten": done.ids, "derived": done.derived, "held": done.held,
                          "remade": done.remade}))
        return 0
    shown: set[str] = set()
    for ident in done.ids:
        if ident in shown:
            continue
        shown.add(ident)
        if ident not in done.held:
            text = " ".join(done.texts.get(ident, "").split())[:80]
            print(f"forgot {ident}" + (f": {text}" if text else ""))
            continue
        turns = done.held[ident]
        n = f"{len(turns)} turn{'s' * (len(turns) != 1)}"
        print(f"forgot the {n} {ident} held (it is remade from the session's other turns):"
              if ident in done.remade else f"forgot {ident} and the {n} it held:")
        for turn in turns:
            if turn not in shown:
                shown.add(turn)
                print(f"  forgot {turn}: {' '.join(done.texts.get(turn, '').split())[:80]}")
    n = len(done.derived)
    many = len(done.ids) > 1 or any(len(t) > 1 for t in done.held.values())
    print(f"and {n} gestalt{'s' * (n != 1)} learnt from {'them' if many else 'it'} alone" + (":" if n else ""))
    for ident in done.derived:
        print(f"  forgot {ident}: {' '.join(done.texts.get(ident, '').split())[:80]}")
    return 0


def _forget_id(ctx: Context, ident: str):
    """Forget one id. A damaged index does not stop it: the sources are written and the index follows them
    when it is rebuilt. Another process owning the index does: that is the running app, which may be
    appending to the very log the exclude event goes in (its memory panel forgets safely)."""
    from vault.forget import forget
    from vault.memory import MemoryBusyError, MemoryStoreError

    try:
        store = _open(ctx)
    except MemoryBusyError:
        raise
    except MemoryStoreError as exc:
        done = forget(ctx.vault, [ident])
        print(f"home: warning: memory index not updated: {exc}", file=sys.stderr)
        return done
    with store:
        return forget(ctx.vault, [ident], store=store)


def run_reindex(args: argparse.Namespace) -> int:
    from vault.blas import all_blas_threads
    from vault.memory import reindex

    if args.embedder and not args.rebuild:
        raise UsageError("--embedder needs --rebuild (every turn must be re-embedded with the new model)")
    embedder = None
    if args.embedder:
        from vault.embedder import load_embedder

        embedder = load_embedder(args.embedder)
    ctx = Context(args)
    with _open(ctx, embedder) as store:
        if args.rebuild:
            store.reset()
        store.embedder  # noqa: B018 - load it now, so the rate below is indexing alone
        with all_blas_threads():  # foreground, no model beside it: every core embeds
            report = reindex(ctx.vault, store, summaries=_summaries(ctx))
        total = store.count()
    for problem in report.problems:
        print(f"skipped {problem}")
    rate = f" ({report.indexed / report.seconds:.0f} turns/s)" if report.indexed and report.seconds else ""
    made = report.summaries
    summaries = f"; {made} session summar{'ies' if made != 1 else 'y'}" if made else ""
    print(f"indexed {report.indexed} turns from {report.sessions} sessions in {report.seconds:.1f} s{rate}"
          f"{summaries}; removed {report.removed}; {total} in memory")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    ctx = Context(args)
    with _open(ctx) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    labels = {"items": "turns", "keyword_items": "keyword index", "sessions": "sessions", "excluded": "forgotten",
              "embedder": "embedder", "dim": "dimensions", "bytes": "size on disk", "updated": "last indexed",
              "path": "path"}
    for key, label in labels.items():
        value = stats.get(key)
        if key == "bytes":
            value = f"{value / 1e6:.1f} MB"
        print(f"{label:>14}: {value if value is not None else '-'}")
    return 0
