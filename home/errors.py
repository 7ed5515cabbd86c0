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
    # Our own error families, and the trainer's (SourceError, JobError, …) that carry an exit code.
    if isinstance(exc, LLMError | VaultError | UsageError) or isinstance(getattr(exc, "exit_code", None), int):
        print(f"home: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    raise exc
