"""llm/servers/build.py: llama-server compiled against the installed wheel's own llama.cpp libraries."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llm.errors import LLMError
from llm.servers import build as server_build
from tests.servers import server_binary


def test_the_cached_server_runs_on_the_wheels_own_libraries():
    binary = server_binary()
    lib = binary.parent.parent / "lib"
    wheel = server_build.wheel_libs()
    for name in ("libllama.so.0", "libggml.so.0", "libggml-base.so.0", "libmtmd.so.0"):
        assert (lib / name).read_bytes() == (wheel / name).read_bytes(), name
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    resolved = {line.split()[0]: line.split()[2] for line in ldd.splitlines() if "=>" in line and "/" in line}
    assert Path(resolved["libllama.so.0"]).resolve() == (lib / "libllama.so.0").resolve()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    assert f"llama-cpp-python-{server_build.installed_version()}" in version.stdout + version.stderr


def test_the_cache_key_follows_the_wheels_libraries(tmp_path, monkeypatch):
    """A CPU and a CUDA build of one llama-cpp-python version are different servers."""
    libs = tmp_path / "lib"
    libs.mkdir()
    (libs / "libllama.so").write_bytes(b"cpu")
    monkeypatch.setattr(server_build, "wheel_libs", lambda: libs)
    cpu = server_build.binary_path(tmp_path)
    (libs / "libllama.so").write_bytes(b"cuda")
    cuda = server_build.binary_path(tmp_path)
    assert cpu != cuda and cpu.parent.parent.parent == cuda.parent.parent.parent == tmp_path / "llama-server"
    assert cpu.parent.parent.name.startswith(f"{server_build.installed_version()}-")
    assert server_build.find_server(tmp_path) != cpu  # nothing built there yet


def test_an_sdist_of_another_version_is_refused_by_name(tmp_path):
    other = tmp_path / "llama_cpp_python-0.0.1.tar.gz"
    other.write_bytes(b"")
    with pytest.raises(LLMError, match=f"{other}: not the sdist of the installed llama-cpp-python"):
        server_build.build(other, tmp_path / "cache", log=lambda _: None)
    assert not (tmp_path / "cache").exists()  # refused before anything was made
