"""`home`: the command line. Each command group lives in home/commands/; this file only wires them.

Every refusal of bad input is one line on stderr and a non-zero exit (2 bad input, 3 model or adapter
refused, 1 anything else at run time), never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import textwrap
from typing import NoReturn

from home import __version__
from home.commands import (
    adapters,
    app,
    ask,
    backup,
    bounded,
    cache,
    data,
    doctor,
    drift,
    eval,
    gestalts,
    memory,
    personas,
    route,
    runs,
    serve,
    train,
)

GROUPS = (app, ask, adapters, personas, memory, gestalts, route, drift, data, train, runs, cache, eval, serve,
          doctor, backup)

DESCRIPTION = """\
Home: a terminal assistant that learns your voice.

One GGUF model stays loaded; LoRA adapters (personas, your own writing voice, task styles) are
hot-swapped per turn. Every conversation is logged in your private vault.

Run `home` alone to open the chat app (chat's options work there too: home --persona sage, home --continue),
or a command below."""

EPILOG = """\
examples:
  home ask "plan my week" --persona sage
  home ask "draft a note to Sam" --adapter me-voice:0.8 --json
  home adapters add ./my-style.gguf --name my-style --kind style --tones upbeat
  home personas import ./card.png
  home doctor
  home --gpu-layers 20 ask "hi"     (only 20 layers on the GPU: a model bigger than its memory)
  home serve --host 0.0.0.0         (the model in a llama-server, for Home elsewhere: home --backend URL)

environment:
  HOME_VAULT   the vault directory (--vault wins; default: the user data dir)
  HOME_API_KEY the --backend server's API key (else config [backend] api_key)"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written, but their prose re-flowed to the terminal: it was written
    ~100 columns wide (some paragraphs one 300-character line) and broke mid-word at 80. A paragraph starts
    at a blank line, a "- " item (its lines after the first indented two spaces) or a "Label: " line;
    other indented lines (examples, the environment table) are kept exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        para: list[str] = []

        def flush() -> None:
            if para:
                hang = "  " if para[0].startswith("- ") else ""
                out.append(textwrap.fill(" ".join(para), width, initial_indent=indent,
                                         subsequent_indent=indent + hang))
                para.clear()

        for line in text.splitlines():
            item = bool(para) and para[0].startswith("- ")
            if item and line.startswith("  ") and line[2:3].strip():  # an item's continuation, hanging
                para.append(line.strip())
                continue
            if not line.strip() or line[0].isspace():
                flush()
                out.append(indent + line if line.strip() else "")
                continue
            if item or line.startswith("- ") or LABEL.match(line):  # after an item, an unindented line is new
                flush()
            para.append(line.strip())
        flush()
        return "\n".join(out)


LABEL = re.compile(r"[\w$-][\w$ -]{0,24}: ")  # "Usage: …", "llama-server: …": each starts a paragraph


class Parser(argparse.ArgumentParser):
    """argparse, but a mistyped choice (a command, a verb, a --mode) is one line with the nearest right one:
    `home aks` printed the whole usage and every command, and no hint. Every help page is formatted by
    HelpFormatter (the subcommands' parsers are this class too: argparse makes them of their parent's)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's own
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        m = re.fullmatch(r"argument (\S+): invalid choice: '?(.*?)'? \(choose from (.*)\)", message, re.S)
        if m is None:
            super().error(message)
        name, bad, listed = m.groups()
        choices = [c.strip().strip("'") for c in listed.split(",")]
        near = difflib.get_close_matches(bad, choices, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        what = "command" if name in ("COMMAND", "VERB") else name
        self.exit(2, f"{self.prog}: error: unknown {what} '{bad[:60]}'{hint} (one of: {', '.join(choices)}; "
                     f"see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="home",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"home {__version__}")
    parser.add_argument("--vault", metavar="DIR", help="vault directory (overrides HOME_VAULT)")
    parser.add_argument(
        "--model",
        metavar="PATH_OR_REF",
        help="a .gguf file or a Hugging Face reference owner/repo/file.gguf (default: built-in SmolLM2-135M)",
    )
    parser.add_argument("--user", metavar="NAME", help="who is talking (default: from config.toml)")
    parser.add_argument(
        "--gpu-layers",
        type=_gpu_layers,
        metavar="N",
        help="model layers on the GPU: -1 all, 0 none (default: config [context] gpu_layers, else all "
        "when llama.cpp was built with GPU offload)",
    )
    parser.add_argument(
        "--backend",
        metavar="URL",
        help="reply through a llama-server at URL (http://HOST:PORT; `home serve` starts one) instead of "
        "loading the model here (default: config [backend] url)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    parser.set_defaults(func=app.run)
    return parser


# -1 or a count, refused at parse time (exit 2) rather than read by llama.cpp as "all"
_gpu_layers = bounded(int, lambda v: v >= -1, "-1 (all) or a number of layers >= 0")


TOP_VALUED = {"--vault", "--model", "--user", "--gpu-layers", "--backend"}  # home's own options that take a value
CHAT_FLAGS = {"--persona", "--plain", "--max-tokens", "--continue"}


def chat_by_default(argv: list[str]) -> list[str]:
    """`home` alone is `home chat`, so `home --persona sage` (or --continue, --plain, --max-tokens) is too: it
    said "unknown command 'sage'", argparse reading the flag as unknown and its value as the command."""
    i = 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag in CHAT_FLAGS:
            return [*argv[:i], "chat", *argv[i:]]
        if flag not in TOP_VALUED:
            return argv  # a command, --help, --version, or something argparse will refuse itself
        i += 1 if "=" in argv[i] else 2
    return argv


def main(argv: list[str] | None = None) -> int:
    from home.errors import report_error

    # Everything Home writes is the user's private data (dirs 0700, files 0600), including what libraries
    # create on their own (ChromaDB's segment files, SQLite journals) before anyone fixes their modes:
    # a kill -9 mid-indexing left 0644 files. The trainer worker does the same (trainer/__main__.py).
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(chat_by_default(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("home: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - known errors print one line; others re-raise inside
        return report_error(exc)


if __name__ == "__main__":
    sys.exit(main())
