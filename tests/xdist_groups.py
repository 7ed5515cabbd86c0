"""Which tests may run side by side when the suite runs on two workers (`./dev test` runs `-n 2`).

On two cores the suite is half idle when run in one process: CLI subprocesses starting, the app waiting for
its screen, files fsynced. Two workers fill those gaps, but two trainings at once would double the peak
memory and starve each other, so every module that trains (or converts, verifies, evaluates adapters) joins
one group that a single worker runs in order. Every other module is its own group, so its module-scoped
fixtures (a trained adapter, a built index) are made once, not once per worker.

A module that trains and is not matched here must say so: `pytestmark = pytest.mark.trains`.
"""

from __future__ import annotations

import re

import pytest

# Modules whose tests start the trainer worker or train in-process. Only these: the group is the suite's
# critical path (its worker runs nothing else while the other one finishes everything besides). Of the
# trainer_ modules, the data sources (no model), the memory watch and loss (a tiny model built in memory) and
# the worker's stop on a lost parent (a stand-in worker, no training) run beside it.
TRAINER = re.compile(r"test_(trainer_(?!sources|memory$|worker$)\w+|families|gpu_check|app_retrain\w*|app_learn_picks"
                     r"|\w*dpo\w*|adapter_names|vault_orphans|notebook_\w+)$")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "trains: runs the trainer; shares one worker with every other such test")


def group_of(module: str, item: pytest.Item) -> str:
    return "trainer" if TRAINER.match(module) or item.get_closest_marker("trains") else module


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group_of(module, item)))
