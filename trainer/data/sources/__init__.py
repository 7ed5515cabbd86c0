"""Training-data sources: each turns one kind of input into normalised Examples plus a QA report.

`load_source` is the single entry point the trainer and the CLI call; the per-source modules stay
importable alone (they import only the helpers below, never each other), so a test can drive one source.
Malformed input never raises: it becomes a `Rejection` naming the file, the line and the reason. Only a
request that cannot work at all (missing file, unknown speaker, bad arguments) raises `SourceError`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from trainer.data.examples import DatasetReport

KINDS = ("logs", "transcript", "essays", "jsonl", "gestalts")
TARGETS = ("user", "persona")


class SourceError(ValueError):
    """A source request that cannot be served; the message names the file and what was found."""

    exit_code = 2


def load_source(kind: str, path: str | Path | None = None, *, vault=None, speaker: str | None = None,
                target: str = "user", persona: str | None = None, window: int = 10,
                user: str | None = None) -> DatasetReport:
    """Load one source into a de-duplicated report.

    kind: logs (vault or path: the vault's conversation logs), transcript (path + speaker), essays (path:
    a folder), jsonl (path), gestalts (vault or path: a gestalts folder). `window` bounds how many earlier
    turns become context; `user` names the user (logs: whose messages count; gestalts: the name to turn
    into "you"); `persona` selects persona replies (logs, target="persona") or records (jsonl).
    """
    if kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise SourceError(f"window: expected a whole number of turns >= 1, got {window!r}")
    if kind in ("transcript", "essays", "jsonl") and path is None:
        raise SourceError(f"{kind}: a path is needed")
    if kind in ("logs", "gestalts") and path is None and vault is None:
        raise SourceError(f"{kind}: a vault or a path is needed")
    module = importlib.import_module(f"trainer.data.sources.{kind}")
    if kind == "logs":
        report = module.load_logs(vault=vault, path=path, target=target, persona=persona, window=window,
                                  user=user)
    elif kind == "transcript":
        if not speaker:
            raise SourceError(f"{path}: transcript needs --speaker NAME (whose lines to learn)")
        report = module.load_transcript(Path(path), speaker, window=window)
    elif kind == "essays":
        report = module.load_essays(Path(path))
    elif kind == "jsonl":
        report = module.load_jsonl(Path(path), persona=persona, window=window)
    else:
        report = module.load_gestalts(vault=vault, path=path, user=user)
    report.dedupe()
    return report


def read_text(path: Path, report: DatasetReport) -> str | None:
    """A text file's content with newlines normalised, or None after recording why it was rejected.

    Empty, binary (NUL bytes) and non-UTF-8 files are data problems, not crashes: the caller moves on.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        report.reject(str(path), None, f"cannot read: {exc.strerror or exc}")
        return None
    if not data.strip():
        report.reject(str(path), None, "empty file")
        return None
    if b"\x00" in data[:8192]:
        report.reject(str(path), None, "binary file (contains NUL bytes), not text")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report.reject(str(path), None, f"not UTF-8 text (invalid byte at offset {exc.start})")
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def require_file(path: Path) -> Path:
    """A missing input file is a usage error, unlike a malformed one."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    return path


def merge_roles(turns: list[tuple[str, str]]) -> tuple[dict, ...]:
    """Chat messages from (role, text) turns, joining consecutive same-role turns with a newline.

    Many chat templates insist that roles alternate; several other speakers in a row become one "user"
    message whose lines keep their speakers' names.
    """
    msgs: list[dict] = []
    for role, text in turns:
        if msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"] += "\n" + text
        else:
            msgs.append({"role": role, "content": text})
    return tuple(msgs)


def source_place(kind: str, path: str | Path | None, vault, user: str | None = None) -> str | Path:
    """What a refusal of the whole source names: the path given, else the vault folder it was read from
    (a user's gestalts folder for gestalts, the logs folder for logs)."""
    if path:
        return path
    if kind == "gestalts":
        return vault.gestalts_dir / user if user else vault.gestalts_dir
    return vault.logs_dir
