"""Build llama.cpp's `llama-server` from the llama-cpp-python sdist Home pins, once, into a cache.

Why from that sdist: its `vendor/llama.cpp` is the very llama.cpp Home runs in process, so the server
reads the same GGUFs and LoRA files the same way (and Home's tests compare the two token for token).
The sdist is trimmed for the Python binding: `tools/CMakeLists.txt` and the web UI (`ui/`) are gone.
The build puts back a `tools/CMakeLists.txt` naming `mtmd` and `server`, and a UI library with no
assets (the server then serves its API only, which is all Home asks of it). Only the `llama-server`
target is compiled; the binary lands in `<cache>/llama-server/<version>/bin/llama-server`, swapped in
whole, so a second caller (CI, `home serve`) pays nothing.

    python -m llm.servers.build [--sdist FILE] [--cache DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..errors import LLMError

VERSION = "0.3.36"  # llama-cpp-python, = the pinned runtime in pyproject.toml
_SDIST = f"llama_cpp_python-{VERSION}"

_TOOLS_CMAKE = "add_subdirectory(mtmd)\nadd_subdirectory(server)\n"
_UI_CMAKE = """\
# Home: the sdist has no web UI; an empty asset table keeps the server's API and nothing else.
if (NOT TARGET llama-ui)
    add_library(llama-ui STATIC ${CMAKE_CURRENT_SOURCE_DIR}/home_ui/ui.cpp)
    target_include_directories(llama-ui PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/home_ui)
    add_custom_target(llama-ui-assets)
endif()
"""
_UI_H = """\
#pragma once
#include <cstddef>
#include <string>
#include <vector>

struct llama_ui_asset {
    std::string name;
    std::string type;
    std::string etag;
    const unsigned char * data;
    size_t size;
};

const std::vector<llama_ui_asset> & llama_ui_get_assets();
const llama_ui_asset * llama_ui_find_asset(const std::string & name);
bool llama_ui_use_gzip();
"""
_UI_CPP = """\
#include "ui.h"

const std::vector<llama_ui_asset> & llama_ui_get_assets() {
    static const std::vector<llama_ui_asset> none;
    return none;
}
const llama_ui_asset * llama_ui_find_asset(const std::string &) { return nullptr; }
bool llama_ui_use_gzip() { return false; }
"""
_CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary that can be copied into the cache
    "-DGGML_NATIVE=ON",  # the build machine's own CPU features, as llama-cpp-python's own build
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # would download the UI
    "-DLLAMA_OPENSSL=OFF",  # Home talks plain HTTP on 127.0.0.1, or through the user's own proxy
]


def cache_root() -> Path:
    """`$HOME_LLAMA_SERVER_CACHE`, else the user's cache dir (`~/.cache/home` on Linux)."""
    explicit = os.environ.get("HOME_LLAMA_SERVER_CACHE")
    if explicit:
        return Path(explicit)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("home"))


def binary_path(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "llama-server" / VERSION / "bin" / "llama-server"


def find_server(cache: Path | None = None) -> Path | None:
    """The llama-server to run: `$HOME_LLAMA_SERVER`, else the cached build, else one on PATH."""
    explicit = os.environ.get("HOME_LLAMA_SERVER")
    if explicit:
        return Path(explicit)
    built = binary_path(cache)
    if built.is_file():
        return built
    found = shutil.which("llama-server")
    return Path(found) if found else None


def fetch_sdist(folder: Path) -> Path:
    """The llama-cpp-python sdist in `folder`, downloaded there by pip if missing."""
    found = folder / f"{_SDIST}.tar.gz"
    if found.is_file():
        return found
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={VERSION}", "-d", str(folder), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not found.is_file():
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LLMError(f"llama-cpp-python {VERSION} sdist: pip download failed ({why})")
    return found


def _prepare(sdist: Path, work: Path) -> Path:
    """Extract `vendor/llama.cpp` from the sdist into `work` and put back what the trimmed tree lacks."""
    inner = f"{_SDIST}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(inner) and len(m.name) > len(inner)]
        for m in members:
            m.name = m.name[len(inner):]
        tar.extractall(work, members=members, filter="data")
    tools = work / "tools"
    if not (tools / "server" / "CMakeLists.txt").is_file():
        raise LLMError(f"{sdist}: no tools/server in its vendor/llama.cpp")
    if not (tools / "CMakeLists.txt").is_file():
        (tools / "CMakeLists.txt").write_text(_TOOLS_CMAKE)
    server = tools / "server"
    if not (work / "ui").is_dir():  # the sdist dropped the web UI: an empty one
        (server / "home_ui").mkdir()
        (server / "home_ui" / "ui.h").write_text(_UI_H)
        (server / "home_ui" / "ui.cpp").write_text(_UI_CPP)
        cmake = server / "CMakeLists.txt"
        cmake.write_text(_UI_CMAKE + cmake.read_text())
    return work


def build(sdist: Path, cache: Path | None = None, jobs: int = 2, log=print) -> Path:
    """Compile `llama-server` from `sdist` into the cache; returns the binary. Raises LLMError."""
    dest = binary_path(cache)
    if dest.is_file():
        return dest
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            raise LLMError(f"building llama-server needs {tool} on PATH")
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llama-server-build-", dir=dest.parent) as tmp:
        src = _prepare(sdist, Path(tmp) / "src")
        out = Path(tmp) / "build"
        steps = (
            ["cmake", "-S", str(src), "-B", str(out), *_CMAKE_FLAGS]
            + (["-G", "Ninja"] if shutil.which("ninja") else []),
            ["cmake", "--build", str(out), "--target", "llama-server", "-j", str(jobs)],
        )
        for cmd in steps:
            log(f"llama-server build: {' '.join(cmd[:4])} …")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise LLMError(f"building llama-server failed at `{' '.join(cmd[:3])}`:\n{tail}")
        built = out / "bin" / "llama-server"
        if not built.is_file():
            raise LLMError(f"building llama-server: no binary at {built}")
        partial = dest.with_name(f".llama-server.tmp-{os.getpid()}")
        shutil.copy2(built, partial)
        os.replace(partial, dest)  # whole or not at all
    log(f"llama-server built in {time.monotonic() - started:.0f} s: {dest}")
    return dest


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llm.servers.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, help=f"{_SDIST}.tar.gz (default: pip download into the cache)")
    ap.add_argument("--cache", type=Path, help="cache root (default: $HOME_LLAMA_SERVER_CACHE or ~/.cache/home)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    cache = args.cache or cache_root()
    try:
        sdist = args.sdist or fetch_sdist(cache / "sdist")
        print(build(sdist, cache, args.jobs))
    except LLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
