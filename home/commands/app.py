"""`home` with no command, or `home chat`: the Textual app (home/app/). `--plain`, or stdin that is not
a terminal, gives the plain streaming REPL on the same turn code (`home.turn.Conversation`), so
scripts can pipe into it and every turn is logged either way.
"""

from __future__ import annotations

import argparse
import re
import sys

from home.commands import positive_int
from home.context import Context
from home.generation import generation_params
from home.stack import activate, persona_specs, resolve_stack
from home.turn import Conversation
from vault.errors import PersonaError
from vault.logs import ConversationLog
from vault.personas import get_persona

HELP = "commands: /persona NAME (switch; 'none' for the base model), /new (fresh chat), /help, /quit"
COMMAND = re.compile(r"/[A-Za-z?]+")  # what looks like a command; "/etc/hosts is …" is a message


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat in the terminal (what `home` alone starts)",
                       description="An interactive chat; every turn is logged in the vault.")
    p.add_argument("--persona", metavar="NAME", help="start with this persona")
    p.add_argument("--plain", action="store_true",
                   help="a plain line-by-line REPL instead of the full-screen app (also when stdin is no tty)")
    p.add_argument("--max-tokens", type=positive_int, metavar="N", help="cap each reply (default: config/persona)")
    p.add_argument("--continue", dest="resume", metavar="SESSION", nargs="?", const="latest",
                   help="reopen a session (default: the latest) with its history, as `home ask --continue`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "resume", None):  # checked here: a missing session is one line, not an error screen
        from home.commands.ask import resolve_session

        ctx = Context(args)
        args.resume = ConversationLog.open(ctx.vault, resolve_session(ctx, args.resume)).session
    if getattr(args, "plain", False) or not sys.stdin.isatty() or not sys.stdout.isatty():
        return run_plain(args)
    from home.app import AppOptions, run_app

    return run_app(AppOptions.from_args(args))


def run_plain(args: argparse.Namespace) -> int:
    ctx = Context(args)
    name = getattr(args, "persona", None) or ctx.config.persona or None
    persona = get_persona(ctx.vault, name) if name else None
    engine = ctx.backend()
    convo = _new_conversation(ctx, engine, persona, getattr(args, "resume", None))
    print(f"Home — {engine.info.name}, persona: {persona.name if persona else 'none'}. {HELP}", file=sys.stderr)
    if convo.history:
        print(f"(continuing session {convo.log.session}: {len(convo.history)} earlier messages)", file=sys.stderr)
    else:
        _greet(convo)
    while True:
        try:
            text = input(f"{ctx.user}> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not text:
            continue
        command, _, rest = text.partition(" ")
        if command in ("/quit", "/exit"):
            return 0
        if command == "/new":
            convo = _new_conversation(ctx, engine, convo.persona)
            print("(new chat)", file=sys.stderr)
            _greet(convo)
            continue
        if command == "/persona":
            try:  # a typo in a name is said and the chat goes on (it used to end the chat, exit 2)
                persona = None if rest.strip() in ("", "none") else get_persona(ctx.vault, rest.strip())
            except PersonaError as exc:
                print(f"({exc})", file=sys.stderr)
                continue
            convo.persona = persona
            print(f"(persona: {persona.name if persona else 'none'})", file=sys.stderr)
            _greet(convo)
            continue
        if COMMAND.fullmatch(command):  # /help, or a mistyped command: never sent to the model as a message
            print(f"({HELP})" if command in ("/help", "/?") else f"(unknown command {command}; {HELP})",
                  file=sys.stderr)
            continue
        params = generation_params(ctx, convo.persona, argparse.Namespace(
            temperature=None, top_p=None, top_k=None, repeat_penalty=None,
            max_tokens=getattr(args, "max_tokens", None), seed=None))
        manifest = ctx.manifest()
        stack = resolve_stack(manifest, persona_specs(convo.persona), engine.info.fingerprint, engine.info.name)
        activate(engine, ctx.vault, manifest, stack)
        label = convo.persona.name if convo.persona else "home"
        sys.stdout.write(f"{label}> ")
        try:
            for piece in convo.send(text, params, stack):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")


def _greet(convo: Conversation) -> None:
    """A chat the user has not spoken in yet opens with the persona's greeting (logged as the persona's)."""
    opening = convo.greet()
    if opening is not None:
        print(f"{convo.persona.name}> {opening}", flush=True)


def _new_conversation(ctx: Context, engine, persona, session: str | None = None) -> Conversation:
    """A fresh session, or `session` continued with its history (as `home ask --continue`)."""
    if session is None:
        return Conversation(engine, ConversationLog.create(ctx.vault), ctx.user, persona)
    log = ConversationLog.open(ctx.vault, session)
    history = [{"role": r["role"], "content": r["text"]} for r in log.records()
               if r.get("role") in ("user", "assistant") and not r.get("partial")]
    return Conversation(engine, log, ctx.user, persona, history)
