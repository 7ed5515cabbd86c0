"""Malformed inputs through the real `home` entry points (issue 15): the suite's slice of the campaign in
bench/reliability/malformed.py, with the same generators (tests/malformed*.py) at small sizes.

Every case: no traceback, nothing written outside the vault (a sentinel folder beside it), nothing in the
vault changed by a refused input, and one `home: error:` line naming the file (and line or field).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.malformed import targets
from tests.malformed_run import run_case

TARGETS = targets(size=8)  # KiB in the "huge" strings; the bench uses 1 MiB
EXAMPLES = {"card-json": 8, "card-png": 6, "manifest": 8, "config": 8, "gestalt": 6, "sheet": 6, "dataset": 10,
            "adapter-gguf": 8, "preferences": 6}

# Each defect the campaign found, by the mutation that found it (fixed in the same commit).
FIXED = [
    ("card-json", "huge-huge-int"),  # json.loads' 4300-digit ValueError escaped the card reader
    ("card-json", "name-arg-huge"),  # `--persona <a megabyte>` echoed whole into "unknown persona …"
    ("manifest", "huge-huge-int"),  # ... and the manifest reader
    ("manifest", "huge-long-string"),  # a megabyte name echoed whole into the error line
    ("config", "huge-int"),  # tomllib's ValueError for a long integer escaped as a traceback
    ("config", "huge-string"),  # a megabyte value echoed whole into the error line
    ("config", "path-trick:user"),  # `user = "../../x"` reached gestalt folders before any check
    ("config", "unknown-key"),  # a typo in [keys] was silently ignored
    ("config", "path-trick:model"),  # `model = "../x"`: "model not found: ../x", not naming config.toml
    ("gestalt", "nul"),  # a NUL byte in a gestalt was accepted as text
    ("gestalt", "path-trick-forget"),  # `forget ../../x` built a path from the id before checking it
    ("dataset", "logs-huge-deep"),  # RecursionError from a deep log line (read_log, the logs source)
    ("dataset", "jsonl-huge-int"),  # the 4300-digit ValueError in the jsonl source
    ("preferences", "symlink"),  # a preferences file linked out of the vault was appended to
    ("preferences", "huge-deep"),  # RecursionError in read_log
    ("preferences", "huge-int"),
]


def check(case, process: bool = False) -> None:
    v = run_case(case, process=process)
    assert v.clean, f"{case!r}\n{v.traceback or v.escapes or v.changed or v.unclear}"


def _run(strategy, n: int, process: bool = False) -> None:
    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(case):
        check(case, process)

    one()


@pytest.mark.parametrize("target", sorted(EXAMPLES))
def test_malformed_input_is_refused_in_one_line(target):
    _run(TARGETS[target], EXAMPLES[target])


@pytest.mark.parametrize(("target", "kind"), FIXED, ids=[f"{t}-{k}" for t, k in FIXED])
def test_fixed_defect_stays_fixed(target, kind):
    seen = []

    def wanted(case) -> bool:
        if case.kind.startswith(kind):
            seen.append(case.kind)
            return True
        return False

    _run(TARGETS[target].filter(wanted), 2)
    assert seen, f"the generator never drew a {kind} case"


def test_a_real_process_refuses_in_one_line_too():
    """The same contract from `python -m home.cli` in its own process (the slice above runs in this one)."""
    _run(TARGETS["card-png"], 1, process=True)
