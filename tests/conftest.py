"""Shared pytest fixtures, one section per package. Keep each section small."""

from __future__ import annotations

import os
import signal

import pytest

# Before torch is imported: torch's OpenMP threads spin after each op and starve llama.cpp when the two
# alternate in one process (verification: 264 s spinning vs 73 s passive). The trainer worker does the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Training's dequantized copies of the base (trainer/worker/base_cache.py) go to a test cache, never the user's
# own, and outlive the session: every training test after the first loads the base in ~2 s, not ~36 s.
# Tests of the cache itself point HOME_CACHE at their own temp folder.
os.environ["HOME_CACHE"] = os.path.join(
    os.environ.get("HOME_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "home-tests"), "cache")

# A suite started in the background by a script (`./dev test &`, nohup, some CI runners) inherits SIGINT
# ignored (POSIX: asynchronous commands of a non-interactive shell ignore it), and so would every `home`
# the tests start: a test's Ctrl-C (SIGINT) then stopped nothing and the run trained to the end. The
# tests play a person at a terminal, where Ctrl-C is live.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# --- llm fixtures ---


@pytest.fixture(scope="session")
def model_path():
    """The bundled SmolLM2-135M-Instruct GGUF (real model, ~98 MB)."""
    from llm.models import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def embedder():
    """The default MiniLM, loaded once per test process (onnxruntime's session is thread-safe; it holds no
    per-test state)."""
    from vault.embedder import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def engine(model_path):
    """One real Engine for the whole session (n_ctx 1024). Tests that change its adapters put the
    base stack back (see `clean_engine` in tests/test_llm_adapters.py)."""
    from llm.engine import Engine

    eng = Engine(model_path, n_ctx=1024)
    yield eng
    eng.close()


# --- llm.servers fixtures: one real llama-server per session (tests/servers.py) ---

from tests.servers import llama_server, server_adapters  # noqa: E402, F401

# --- two workers: trainings in one group, every other module its own (tests/xdist_groups.py) ---

pytest_plugins = ["tests.xdist_groups"]
