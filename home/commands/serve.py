"""`home serve`: the vault's model in a llama-server, with the adapters in reach registered for it.

For a user whose model should live elsewhere than the terminal: on a GPU box, `home serve --host
0.0.0.0` there, `home --backend http://BOX:PORT` here. The adapters in reach whose base is this model
(`Manifest.in_reach`: each name's newest version, each user's voice, what they stack on; not every
version a weekly retraining ever made) are loaded at scale 0 (`--lora … --lora-init-without-apply`);
each request says which apply. A newly registered adapter (a finished `home train`, `home adapters add`)
or an older version a Home on this vault names (home/serve_link.py) restarts the server with the new
list once it is idle (llama-server cannot add a LoRA to a running model): between turns, never during
one. `--adapter ID` holds an older version from the start (for a Home on another machine).
Bound to anything but the loopback address it requires an API key (one is made up and printed when
none is given). Ctrl-C stops it cleanly (SIGINT, its own shutdown), and so do SIGTERM and SIGHUP (a
closed terminal, `kill`, a service manager): before, those ended Home at once and left llama-server
running; a SIGKILL'd Home takes it along too (llm/servers/managed.py `tie_to_parent`).
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from home.context import Context
from home.errors import UsageError

POLL_S = 2.0  # how often the manifest is checked for new adapters


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the model in a llama-server with the vault's adapters, for `home --backend URL`",
        description="Start llama.cpp's llama-server for the vault's model with each adapter name's newest "
                    "version and each user's voice, print its URL, and keep it running until Ctrl-C. New "
                    "adapters, and older versions a Home on this vault names, restart it between turns.",
        epilog="examples:\n  home serve\n  home serve --host 0.0.0.0 --port 8080   (prints an API key)\n"
               "  home --backend http://127.0.0.1:8080 ask \"hello\"\n\n"
               "llama-server: $HOME_LLAMA_SERVER, else the one `python -m llm.servers.build` compiled from\n"
               "the llama-cpp-python source Home pins (a few minutes, once), else llama-server on PATH.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any free one)")
    p.add_argument("--api-key", metavar="KEY", help="require this key (default: none on 127.0.0.1, a new one elsewhere)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: config [context] n_threads)")
    p.add_argument("--ctx", type=int, metavar="N", help="context tokens (default: config [context] n_ctx)")
    p.add_argument("--adapter", action="append", default=[], metavar="ID",
                   help="also hold this adapter version (repeatable; a name means its newest)")
    p.set_defaults(func=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def adapter_files(ctx: Context, named: Sequence[str] = ()) -> list[Path]:
    """The adapters in reach, those `named` (refs) and those a Home on this vault asked for, made for
    this model and present, in id order. An unknown ref in `named` is one line naming it."""
    from home.serve_link import wanted
    from llm.fingerprint import same_base

    fingerprint = ctx.model_info.fingerprint
    manifest = ctx.manifest()
    ids = manifest.in_reach() | {manifest.resolve(ref).id for ref in named} | wanted(ctx.vault)
    entries = [manifest.adapters[i] for i in sorted(ids) if i in manifest.adapters]
    return [ctx.vault.root / e.file for e in entries
            if same_base((e.base or {}).get("fingerprint"), fingerprint) and (ctx.vault.root / e.file).is_file()]


def _idle(url: str, key: str | None) -> bool:
    """No slot is decoding (GET /slots); unknown counts as busy."""
    from llm.servers.http import Http, ServerError

    try:
        slots = Http(url, key, timeout=5).get("/slots")
    except ServerError:
        return False
    return isinstance(slots, list) and not any(s.get("is_processing") for s in slots)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from home.serve_link import announce, forget_wants, withdraw
    from llm.servers.build import find_server
    from llm.servers.http import ServerError
    from llm.servers.process import ServerProcess

    ctx = Context(args)
    binary = find_server()
    if binary is None:
        raise UsageError("no llama-server: build one with `python -m llm.servers.build` (a few minutes, once), "
                         "or set HOME_LLAMA_SERVER to one")
    key = args.api_key
    if not key and not _loopback(args.host):
        key = secrets.token_urlsafe(24)
        print(f"API key (give it to Home as [backend] api_key or HOME_API_KEY): {key}")
    forget_wants(ctx.vault)  # a new server starts with the adapters in reach and those named only
    files = adapter_files(ctx, args.adapter)
    cfg = ctx.config.context
    extra = [] if ctx.gpu_layers is None else ["-ngl", str(ctx.gpu_layers)]
    server = ServerProcess(binary, ctx.model_path, files, host=args.host, port=args.port, api_key=key,
                           n_ctx=args.ctx or cfg.n_ctx, n_threads=args.threads or cfg.n_threads or None, extra=extra)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a clean stop, as Ctrl-C: the server goes with Home
        signal.signal(sig, _interrupt)
    print(f"starting llama-server for {ctx.model_info.name} with {len(files)} adapter(s) …", flush=True)
    try:
        server.start()
        announce(ctx.vault, server.url)
        print(f"serving at {server.url}  (home --backend {server.url} …, or [backend] url); Ctrl-C stops it",
              flush=True)
        while True:
            time.sleep(POLL_S)
            if not server.running():
                raise ServerError(f"llama-server stopped by itself: {server.output_tail()}")
            try:
                wanted = adapter_files(ctx, args.adapter)
            except Exception as exc:  # noqa: BLE001 - a manifest mid-edit or broken: keep serving what we have
                print(f"manifest: {exc} (keeping the adapters loaded)", file=sys.stderr)
                continue
            if wanted != server.adapters and _idle(server.url, key):
                print(f"adapters changed: restarting with {len(wanted)} adapter(s) …", flush=True)
                server.restart(wanted)
                print(f"serving at {server.url} again", flush=True)
    except KeyboardInterrupt:
        print("stopping llama-server …", flush=True)
        code = server.stop()
        print(f"stopped (exit {code})")
        return 0
    finally:
        withdraw(ctx.vault)
        server.close()
