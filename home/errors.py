"""One place that turns known errors into one line on stderr and an exit code."""

from __future__ import annotations

import sys

from llm.errors import LLMError
from vault.errors import VaultError


class UsageError(Exception):
    """A command was called with arguments that cannot work together."""

    exit_code = 2


def report_error(exc: BaseException) -> int:
    """Print a known error as `home: error: …` and return its exit code; re-raise anything else."""
    if isinstance(exc, LLMError | VaultError | UsageError):
        print(f"home: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    raise exc
