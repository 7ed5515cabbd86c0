"""Build llama.cpp's `llama-server` against the llama.cpp Home already runs, once, into a cache.

The installed llama-cpp-python wheel ships llama.cpp itself as shared libraries (`llama_cpp/lib`:
libllama, libggml*, libmtmd). Only what the server adds is compiled here — `common/`, `tools/server/`
and cpp-httplib from the sdist of that very version (its `vendor/llama.cpp` is the source the wheel was
built from, so the headers match the libraries) — about 75 objects instead of all of llama.cpp's ~210,
and the server reads GGUFs and LoRAs with the very code the in-process engine uses (the tests compare
the two token for token). The sdist is trimmed for the Python binding (no web UI, no `tools/`
CMakeLists): a small top-level CMakeLists replaces llama.cpp's, importing the wheel's libraries as
targets and adding upstream's own `vendor/`, `common/` and `tools/server/` lists; the UI becomes an
empty asset table (the server serves its API only, all Home asks of it).

The result, `<cache>/llama-server/<version>-<libs>/` with `bin/llama-server` and a copy of the wheel's
`lib/` (found through `$ORIGIN/../lib`), is keyed by the wheel's version and a hash of its libraries (a
CPU and a CUDA build of one version differ) and moved into place whole, so every later caller (CI,
`home serve`, the tests) pays nothing. Compiled at `nice 10`, `-O1`: the server's own code only parses
JSON and moves tokens; the model runs in the wheel's optimized libraries.

    python -m llm.servers.build [--sdist FILE] [--cache DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..errors import LLMError

# What the server needs from the sdist's vendor/llama.cpp (mtmd: only its headers, the wheel has the library);
# src/llama-ext.h: the staging API common/ calls (exported by libllama all the same).
_NEEDED = ("include/", "ggml/include/", "src/llama-ext.h", "common/", "tools/server/", "vendor/", "LICENSE")
_MTMD_HEADERS = re.compile(r"tools/mtmd/[^/]+\.h$")

_SHIM_CMAKE = """\
# Home: llama-server against the installed llama-cpp-python's libraries (llm/servers/build.py).
cmake_minimum_required(VERSION 3.14)
project("home-llama-server" C CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(CMAKE_BUILD_WITH_INSTALL_RPATH ON)
set(CMAKE_INSTALL_RPATH "$ORIGIN/../lib")
set(BUILD_SHARED_LIBS OFF)
set(LLAMA_BUILD_COMMON ON)
set(LLAMA_SUBPROCESS ON)
set(LLAMA_VERSION_MAJOR 0)
set(LLAMA_VERSION_BASE 0.0.0)
set(LLAMA_BUILD_NUMBER 0)
set(LLAMA_BUILD_COMMIT "llama-cpp-python-${HOME_LLAMA_CPP_PYTHON}")
set(BUILD_COMPILER "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}")
set(BUILD_TARGET "${CMAKE_SYSTEM_NAME} ${CMAKE_SYSTEM_PROCESSOR}")
find_package(Threads REQUIRED)
function(llama_add_compile_flags)
endfunction()
function(license_add_file NAME FILE)
endfunction()
foreach(lib llama ggml ggml-base mtmd)
    add_library(${lib} SHARED IMPORTED)
    set_target_properties(${lib} PROPERTIES IMPORTED_LOCATION "${HOME_WHEEL_LIB}/lib${lib}.so")
endforeach()
set_target_properties(llama PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CMAKE_SOURCE_DIR}/include;${CMAKE_SOURCE_DIR}/ggml/include"
    INTERFACE_LINK_LIBRARIES "ggml;ggml-base")
set_target_properties(mtmd PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${CMAKE_SOURCE_DIR}/tools/mtmd")
add_subdirectory(vendor)
add_subdirectory(common)
add_subdirectory(tools/server)
"""
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
_CMAKE_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG",
                "-DCMAKE_C_FLAGS_RELEASE=-O1 -DNDEBUG"]
_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")


def cache_root() -> Path:
    """`$HOME_LLAMA_SERVER_CACHE`, else the user's cache dir (`~/.cache/home` on Linux)."""
    explicit = os.environ.get("HOME_LLAMA_SERVER_CACHE")
    if explicit:
        return Path(explicit)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("home"))


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def wheel_libs() -> Path:
    """The installed llama_cpp package's `lib/` (found without importing it: that loads the libraries)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("building llama-server needs llama-cpp-python installed (it links its libraries)")
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    missing = [n for n in ("libllama.so", "libggml.so", "libggml-base.so", "libmtmd.so") if not (lib / n).is_file()]
    if missing:
        raise LLMError(f"{lib}: no {', '.join(missing)} (llama-server is built on Linux against these)")
    return lib


def _libs_key(lib: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(lib.glob("lib*.so*")):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]


def binary_path(cache: Path | None = None) -> Path:
    """Where the llama-server for the installed llama-cpp-python is (or will be) cached."""
    version = installed_version()
    if version is None:
        raise LLMError("llama-cpp-python is not installed")
    key = _libs_key(wheel_libs())
    return (cache or cache_root()) / "llama-server" / f"{version}-{key}" / "bin" / "llama-server"


def find_server(cache: Path | None = None) -> Path | None:
    """The llama-server to run: `$HOME_LLAMA_SERVER`, else the cached build, else one on PATH."""
    explicit = os.environ.get("HOME_LLAMA_SERVER")
    if explicit:
        return Path(explicit)
    try:
        built = binary_path(cache)
    except LLMError:
        built = None
    if built is not None and built.is_file():
        return built
    found = shutil.which("llama-server")
    return Path(found) if found else None


def sdist_name(version: str) -> str:
    return f"llama_cpp_python-{version}.tar.gz"


def fetch_sdist(folder: Path, version: str) -> Path:
    """The llama-cpp-python `version` sdist in `folder`, downloaded there by pip if missing."""
    found = folder / sdist_name(version)
    if found.is_file():
        return found
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={version}", "-d", str(folder), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not found.is_file():
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LLMError(f"llama-cpp-python {version} sdist: pip download failed ({why})")
    return found


def _prepare(sdist: Path, version: str, work: Path) -> Path:
    """Extract what the server needs from the sdist's `vendor/llama.cpp` and add the shim and empty UI."""
    inner = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            rel = m.name[len(inner):] if m.name.startswith(inner) else ""
            if rel and (rel.startswith(_NEEDED) or _MTMD_HEADERS.match(rel)):
                m.name = rel
                members.append(m)
        tar.extractall(work, members=members, filter="data")
    server = work / "tools" / "server"
    if not (server / "CMakeLists.txt").is_file() or not (work / "common" / "CMakeLists.txt").is_file():
        raise LLMError(f"{sdist}: no tools/server or common in its vendor/llama.cpp (is it llama-cpp-python {version}?)")
    (work / "CMakeLists.txt").write_text(_SHIM_CMAKE)
    (server / "home_ui").mkdir(exist_ok=True)
    (server / "home_ui" / "ui.h").write_text(_UI_H)
    (server / "home_ui" / "ui.cpp").write_text(_UI_CPP)
    cmake = server / "CMakeLists.txt"
    cmake.write_text(_UI_CMAKE + cmake.read_text())
    return work


def _run(cmd: list[str], log, what: str) -> None:
    """Run a build step at nice 10, logging ninja/make progress every tenth of the way."""
    log(f"llama-server build: {what} …")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: os.nice(10))
    tail: list[str] = []
    shown = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-15:]
        m = _PROGRESS.match(line)
        if m and int(m[1]) * 10 // int(m[2]) > shown:
            shown = int(m[1]) * 10 // int(m[2])
            log(f"llama-server build: {m[1]}/{m[2]} objects")
    if proc.wait() != 0:
        raise LLMError(f"building llama-server failed at {what}:\n" + "\n".join(tail))


def build(sdist: Path, cache: Path | None = None, jobs: int = 2, log=print) -> Path:
    """Compile `llama-server` from `sdist` against the wheel's libraries into the cache; returns the
    binary (at once when cached). Raises LLMError."""
    version = installed_version()
    dest = binary_path(cache)
    if dest.is_file():
        return dest
    if sdist.name != sdist_name(version):
        raise LLMError(f"{sdist}: not the sdist of the installed llama-cpp-python {version} ({sdist_name(version)})")
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            raise LLMError(f"building llama-server needs {tool} on PATH")
    home = dest.parent.parent
    home.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=home.parent) as tmp:
        stage = Path(tmp) / "out"
        shutil.copytree(wheel_libs(), stage / "lib", ignore=lambda _d, names: [n for n in names if ".so" not in n])
        src = _prepare(sdist, version, Path(tmp) / "src")
        out = Path(tmp) / "build"
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        _run(["cmake", "-S", str(src), "-B", str(out), *gen, *_CMAKE_FLAGS, f"-DHOME_WHEEL_LIB={stage / 'lib'}",
              f"-DHOME_LLAMA_CPP_PYTHON={version}"], log, "cmake configure")
        _run(["cmake", "--build", str(out), "--target", "llama-server", "-j", str(jobs)], log,
             f"compiling with {jobs} job(s)")
        built = out / "bin" / "llama-server"
        (stage / "bin").mkdir()
        shutil.copy2(built, stage / "bin" / "llama-server")
        check = subprocess.run([str(stage / "bin" / "llama-server"), "--version"], capture_output=True, text=True)
        if check.returncode != 0:
            raise LLMError(f"the built llama-server does not start: {(check.stderr or check.stdout).strip()[-300:]}")
        try:
            os.rename(stage, home)  # whole or not at all
        except OSError:
            if not dest.is_file():  # another builder won the race: theirs is as good
                raise
    log(f"llama-server built in {time.monotonic() - started:.0f} s: {dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llm.servers.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, help="llama_cpp_python-<installed version>.tar.gz "
                    "(default: pip download into the cache)")
    ap.add_argument("--cache", type=Path, help="cache root (default: $HOME_LLAMA_SERVER_CACHE or ~/.cache/home)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    cache = args.cache or cache_root()
    try:
        version = installed_version()
        if version is None:
            raise LLMError("llama-cpp-python is not installed")
        sdist = args.sdist or fetch_sdist(cache / "sdist", version)
        print(build(sdist, cache, args.jobs))
    except LLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
