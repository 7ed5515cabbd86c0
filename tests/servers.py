"""A real llama-server for tests: compiled once against the installed llama-cpp-python's own libraries
(only the server and llama.cpp's `common/`; see llm/servers/build.py), cached outside the repository
(`$HOME_TEST_CACHE/llama-server/<version>-<libs>/`, else ~/.cache/home-tests), so a machine pays for
the build once: the first test that needs it builds it, a parallel worker waits for that build.

HOME_LLAMA_SERVER=PATH uses another binary. Without the sdist (offline, none cached) or a C++ toolchain
the tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.families import cache_dir, sdist

BUILD_TIMEOUT_S = 3600  # a parallel test process waits for the one building


def server_binary() -> Path:
    """`$HOME_LLAMA_SERVER` if set, else the cached llama-server, built on first use."""
    from llm.errors import LLMError
    from llm.servers.build import binary_path, build
    from vault.fsio import FileLock

    if os.environ.get("HOME_LLAMA_SERVER"):
        return Path(os.environ["HOME_LLAMA_SERVER"])
    dest = binary_path(cache_dir())
    if dest.is_file():
        return dest
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            pytest.skip(f"building llama-server needs {tool}")
    tar = sdist()
    with FileLock(cache_dir() / "locks" / "llama-server.lock", timeout=BUILD_TIMEOUT_S):
        try:
            return build(tar, cache_dir(), jobs=2, log=lambda _: None)
        except LLMError as exc:
            pytest.fail(str(exc))


SERVER_KEY = "test-key"


@pytest.fixture(scope="session")
def server_adapters(tmp_path_factory, model_path):
    """Three random adapters, each at `<id>/adapter.gguf` as in a vault (alpha = rank: scale 1); the
    session server holds "a" and "b", never "c"."""
    from tests.loras import make_random_lora

    d = tmp_path_factory.mktemp("server-adapters")
    files = {}
    for seed, ident in enumerate(("a", "b", "c"), start=1):
        (d / ident).mkdir()
        files[ident] = make_random_lora(model_path, d / ident / "adapter.gguf", rank=8, seed=seed,
                                        scale_std=0.05)  # each changes a greedy reply within 12 tokens
    return files


@pytest.fixture(scope="session")
def llama_server(model_path, server_adapters):
    """One llama-server for the session: the default model, adapters a and b, 127.0.0.1, an API key."""
    from llm.servers.process import ServerProcess

    proc = ServerProcess(server_binary(), model_path, [server_adapters["a"], server_adapters["b"]],
                         api_key=SERVER_KEY, n_ctx=1024, n_threads=2)
    proc.start()
    yield proc
    proc.close()
