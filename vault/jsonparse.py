"""JSON from files a user (or a crash) may have damaged: every way `json.loads` fails, as one line.

`json.loads` fails in four ways, not one: `JSONDecodeError` (with a line and column), `UnicodeDecodeError`
for bytes that are not UTF-8, `ValueError` for an integer past Python's 4300-digit limit, and
`RecursionError` for nesting deeper than the interpreter's stack. Readers that caught only the first turned
the others into tracebacks; they call `loads` and catch `JSONProblem` (a `ValueError`).
"""

from __future__ import annotations

import json
from typing import Any


class JSONProblem(ValueError):
    """Why a text is not usable JSON: `msg` (the decoder's words), and `line`/`column` where it knows them.
    `str()` is "invalid JSON: msg (line L, column C)" or "not UTF-8 text (invalid byte at offset N)"."""

    def __init__(self, msg: str, line: int | None = None, column: int | None = None, utf8: bool = True) -> None:
        self.msg, self.line, self.column = msg, line, column
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"invalid JSON: {msg}{where}" if utf8 else msg)


def loads(text: str | bytes) -> Any:
    """`json.loads` with one exception type; bytes must be UTF-8 (a BOM is allowed)."""
    try:
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8-sig")
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise JSONProblem(f"not UTF-8 text (invalid byte at offset {exc.start})", utf8=False) from None
    except json.JSONDecodeError as exc:
        raise JSONProblem(exc.msg, exc.lineno, exc.colno) from None
    except RecursionError:
        raise JSONProblem("nested too deeply to read") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise JSONProblem("a number longer than 4300 digits" if "digits" in str(exc) else str(exc)) from None


def clip(value: Any, width: int = 60) -> str:
    """A value for an error message: JSON-ish, at most `width` characters (a bad field may be megabytes)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"
