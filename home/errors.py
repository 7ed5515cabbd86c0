"""One place that turns known errors into one line on stderr and an exit code."""

from __future__ import annotations

import sys

from llm.errors import LLMError
from vault.errors import VaultError


class UsageError(Exception):
    """A command was called with arguments that cannot work together."""

    exit_code = 2


def require_text(text: str, example: str) -> str:
    """A message or query that is empty or only spaces is refused before anything loads: an empty `home ask`
    was sent to the model and logged as a turn of its own. `example`: the command with words in it."""
    if not text.strip():
        raise UsageError(f"the text is empty: give some words, e.g. {example}")
    return text


def report_error(exc: BaseException) -> int:
    """Print a known error as `home: error: …` and return its exit code; re-raise anything else."""
    # Our own error families, and the trainer's (SourceError, JobError, …) that carry an exit code.
    if isinstance(exc, LLMError | VaultError | UsageError) or isinstance(getattr(exc, "exit_code", None), int):
        print(f"home: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    raise exc
