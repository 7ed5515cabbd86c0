"""`home ask`: one turn from the shell, streamed to stdout and logged like any chat turn."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from home.commands import count, non_negative_float, positive_float, positive_int, probability
from home.context import Context
from home.errors import require_text
from home.generation import generation_params
from home.router import Router, explicit_choice
from home.stack import activate, resolve_stack, upgrade_fingerprints
from home.turn import Conversation
from vault.logs import ConversationLog
from vault.personas import get_persona


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ask",
        help="ask once: stream the reply to stdout and log the turn",
        description="Ask Home once. The reply streams to stdout; the turn is logged in the vault. Sampling "
                    "flags not given come from the persona's card, else config.toml [generation].",
    )
    p.add_argument("text", help="what to say")
    p.add_argument("--persona", metavar="NAME", help="speak with this persona (see `home personas list`)")
    p.add_argument(
        "--adapter",
        metavar="ID[:SCALE]",
        action="append",
        default=[],
        help="add an adapter to the stack: an id (that version) or a name (its newest version); "
             "repeatable; scale defaults to the adapter's own",
    )
    p.add_argument("--no-adapters", action="store_true", help="the base model alone, even if the persona has adapters")
    p.add_argument("--continue", dest="resume", metavar="SESSION", nargs="?", const="latest",
                   help="continue a session (default: the latest) with its history")
    # each default: the persona's card (extensions.home.generation), else config.toml [generation]
    p.add_argument("--max-tokens", type=positive_int, metavar="N", help="the longest reply, in tokens")
    p.add_argument("--temperature", type=non_negative_float, metavar="T", help="sampling temperature: 0 always picks the likeliest "
                   "token; higher is more varied")
    p.add_argument("--top-p", type=probability, metavar="P", help="sample from the likeliest tokens whose probabilities add "
                   "up to P")
    p.add_argument("--top-k", type=count, metavar="K", help="sample from the K likeliest tokens")
    p.add_argument("--repeat-penalty", type=positive_float, metavar="R", help="above 1 discourages repeating tokens")
    p.add_argument("--seed", type=int, metavar="N", help="sampling seed (default: random)")
    p.add_argument("--no-memory", action="store_true", help="do not recall earlier conversations for this turn")
    p.add_argument("--rewrite", action="store_true",
                   help="the model also rewrites the question into a search query for memory ([memory] rewrite)")
    p.add_argument("--mode", choices=("auto", "focused", "character"), default="auto",
                   help="pin the reply mode (default auto: a task is answered focused, chat in character)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the reply and its record")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_text(args.text, 'home ask "plan my week"')
    ctx = Context(args)
    name = args.persona or ctx.config.persona or None
    persona = get_persona(ctx.vault, name) if name else None
    explicit = explicit_choice(persona, args.adapter, args.no_adapters)
    params = generation_params(ctx, persona, args)
    manifest = ctx.manifest()
    engine = ctx.backend()
    info = engine.info
    if upgrade_fingerprints(ctx.vault, info, manifest):  # adapters registered under the v1 fingerprint
        manifest = ctx.manifest()
    router = Router.load(ctx.vault, ctx.config) if ctx.config.router.enabled else None
    recall = _open_recall(ctx, args, router.embedder if router else None)  # shares the router's embedder
    try:
        return _answer(ctx, args, engine, manifest, persona, explicit, params, router, recall)
    finally:
        if recall is not None:
            recall.close()


def _answer(ctx: Context, args: argparse.Namespace, engine, manifest, persona, explicit, params,  # noqa: ANN001
            router, recall) -> int:  # noqa: ANN001
    info = engine.info
    decision = vectors = None
    if router is not None:
        # Deciding costs one MiniLM call (~10 ms), made with what memory searches for; an explicit choice
        # still logs what the router would have picked.
        from home.recall import turn_vectors

        vectors = turn_vectors(router.embedder, args.text, recall)
        decision = router.decide(
            manifest, user=ctx.user, persona=persona, text=args.text, explicit=explicit,
            model_fingerprint=info.fingerprint, model_name=info.name, vector=vectors[args.text], mode=args.mode)
        stack = decision.stack
    else:
        stack = resolve_stack(manifest, explicit or [], info.fingerprint, info.name)
    activate(engine, ctx.vault, manifest, stack)

    if args.resume:
        log = ConversationLog.open(ctx.vault, resolve_session(ctx, args.resume))
        history = [{"role": r["role"], "content": r["text"]} for r in log.records()
                   if r.get("role") in ("user", "assistant") and not r.get("partial")]
    else:
        log = ConversationLog.create(ctx.vault)
        history = []
    convo = Conversation(engine, log, ctx.user, persona, history, recall=recall)
    out = sys.stdout
    for piece in convo.send(args.text, params, stack, router=decision.to_dict() if decision else None,
                            query_vectors=vectors):
        if not args.json:
            out.write(piece)
            out.flush()
    if recall is not None:
        recall.wait_idle()  # this turn is searchable by the next one
    notices = getattr(engine, "notices", ())  # a server that could not serve the stack as asked (vLLM)
    if notices:
        print(f"home: {'; '.join(notices)}", file=sys.stderr)
    if args.json:
        rec = convo.last.record
        json.dump({"text": convo.last.text, "session": rec["session"], "id": rec["id"],
                   "persona": rec["persona"], "adapters": rec["adapters"], "tokens": rec["tokens"],
                   "timings": rec["timings"], "memory_ids": rec["memory_ids"], "router": rec["router"],
                   "finish_reason": rec["finish_reason"]}, out)
    out.write("\n")
    return 0


def _open_recall(ctx: Context, args: argparse.Namespace, embedder=None):
    """Memory for this one turn, only when the message could use it: chit-chat pays nothing (no
    ChromaDB import, no embedder). The store catches up with the logs first, so turns said in the
    app or in earlier `home ask` calls are all searchable. Busy (the app owns it): one note, go on."""
    from vault.retrieval import should_retrieve

    settings = ctx.config.memory
    if args.rewrite:
        settings = dataclasses.replace(settings, rewrite=True)
    if args.no_memory or not settings.enabled or not should_retrieve(args.text):
        return None
    from home.recall import Recall

    recall = Recall.open(ctx.vault, settings, embedder)
    if recall.store is None:
        print(f"home: answering without memory: {recall.unavailable}", file=sys.stderr)
        return None
    recall.catch_up()
    return recall


def resolve_session(ctx: Context, wanted: str) -> str:
    """`--continue [SESSION]` (ask and chat): "latest" is the newest session; a missing one is refused when opened."""
    from vault.errors import LogError
    from vault.logs import list_sessions

    sessions = list_sessions(ctx.vault)
    if wanted == "latest":
        if not sessions:
            raise LogError(f"no sessions to continue in {ctx.vault.logs_dir}")
        return sessions[0].id
    return wanted
