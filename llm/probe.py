"""The load probe: a model file Home has not loaded before is first read by llama.cpp in a child process.

Why: some GGUFs make llama.cpp abort instead of returning an error. A SentencePiece ("llama") vocabulary
without byte tokens loads fine and then throws `std::out_of_range` (`unordered_map::at`) out of
`llama_tokenize` on the first text with a space; the exception cannot cross the C API, so the process
ends with `terminate called …` and SIGABRT, and Home with it, without a word of its own. In a child the
crash becomes one line naming the file (`ModelError`, exit 3).

What the child does: a vocab-only load (no weights read; the abort seen is in the vocabulary), then it
tokenizes a text holding every byte valid UTF-8 can contain, with and without special-token parsing and
BOS/EOS, plus the text of every control token (what a chat template renders), and turns every token id
back into its piece: what Home's engine does to a prompt and a reply. 0.6-0.9 s for the default model
on 2 idle cores, 1.7-2 s on busy ones (half of it the child's Python and llama.cpp start), once per file; a remembered pass costs
~2 ms (tests/test_llm_probe.py prints both). A full load and a decode would catch more, but would read
every weight of a large model on the CPU.

Remembered: a passed probe writes `<cache>/probes/<header_sha256>.json` (`HOME_CACHE` or platformdirs
`user_cache_dir("home")`, as trainer/worker/base_cache.py), keyed on the file's header digest (metadata and
tensor infos, `ModelInfo.header_sha256`) and llama.cpp's version: the weight fingerprint
(llm/fingerprint.py) ignores the tokenizer type, so a file that crashes can share it with one that does
not. A failed probe is not remembered: the next load probes again (and is refused again, or passes after
an upgrade of llama.cpp).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .gguf_meta import ModelInfo

CACHE_ENV = "HOME_CACHE"
TIMEOUT_S = 300.0  # a vocab-only load of the largest vocabularies takes seconds; this is for a hung child
REFUSED = 3  # the child's exit code when llama.cpp refused the file with an error (no crash)


@dataclass(frozen=True)
class ProbeResult:
    """`ran`: a child was started (False: the file had passed before); `seconds` it took."""

    ran: bool
    seconds: float = 0.0


def cache_root() -> Path:
    """`HOME_CACHE` when set (tests set it), else the platform's user cache dir: derived data, never the vault."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("home"))


def _llama_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def record_path(info: ModelInfo) -> Path:
    return cache_root() / "probes" / f"{info.header_sha256}.json"


def passed(info: ModelInfo) -> bool:
    """Whether this file (by header digest) passed a probe under this llama.cpp."""
    try:
        data = json.loads(record_path(info).read_text("utf-8"))
    except (OSError, ValueError):
        return False  # none yet, or damaged: probing again costs under a second
    return isinstance(data, dict) and data.get("llama_cpp") == _llama_version() and data.get("ok") is True


def _remember(info: ModelInfo, seconds: float) -> None:
    path = record_path(info)
    data = {"ok": True, "llama_cpp": _llama_version(), "fingerprint": info.fingerprint, "name": info.name,
            "file": info.path, "seconds": round(seconds, 3)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), "utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # remembering only saves the next probe


def probe_model(path: str | os.PathLike, info: ModelInfo, timeout: float = TIMEOUT_S) -> ProbeResult:
    """Read the model with llama.cpp in a child process unless this file passed before; `ModelError`
    (one line naming the file) when the child crashed, hung or failed."""
    if passed(info):
        return ProbeResult(ran=False)
    path = Path(path)
    t0 = time.perf_counter()
    env = dict(os.environ, GGML_NO_BACKTRACE="1")  # ggml would attach gdb to print a backtrace: slow, noisy
    try:
        proc = subprocess.run([sys.executable, "-m", "llm.probe", str(path)], env=env, capture_output=True,
                              text=True, errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{path}: llama.cpp did not finish reading it in {timeout:.0f} s (in a test process); "
                         "Home did not load it") from None
    seconds = time.perf_counter() - t0
    if proc.returncode == 0:
        _remember(info, seconds)
    elif proc.returncode != REFUSED:  # a refusal is llama.cpp's own error: the real load reports it
        raise ModelError(f"{path}: {_why(proc)}; Home did not load it")
    return ProbeResult(ran=True, seconds=seconds)


def _why(proc: subprocess.CompletedProcess) -> str:
    """One line: how the child ended, at which step, and llama.cpp's last words."""
    stages = [ln.removeprefix("stage ") for ln in proc.stdout.splitlines() if ln.startswith("stage ")]
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    what = next((ln.split("what():", 1)[1].strip() for ln in reversed(lines) if "what():" in ln), None)
    what = what or next((ln for ln in reversed(lines) if "GGML_ASSERT" in ln or "error" in ln.lower()), None)
    what = what or (lines[-1] if lines else "no message")
    if proc.returncode < 0:
        try:
            how = f"llama.cpp crashed ({signal.Signals(-proc.returncode).name})"
        except ValueError:
            how = f"llama.cpp crashed (signal {-proc.returncode})"
    else:
        how = f"reading it with llama.cpp failed (exit {proc.returncode})"
    where = f" while {stages[-1]}" if stages else ""
    return f"{how}{where}: {what[:200]}"


# --- the child -------------------------------------------------------------------------------------


def coverage_text() -> str:
    """Every byte valid UTF-8 can hold: all of U+0001..U+07FF (1- and 2-byte forms, every continuation
    byte) and one character per 3- and 4-byte lead byte; plus whitespace runs and a line break."""
    chars = [chr(c) for c in range(1, 0x800)]
    chars += [chr(0x800)] + [chr(lead << 12) for lead in range(1, 16)]
    chars += [chr(0x10000), chr(0x40000), chr(0x80000), chr(0xC0000), chr(0x100000)]
    return "Hello, world!\n  two  spaces\ttab\r\n" + "".join(chars)


def _child(path: str) -> int:
    import ctypes

    import llama_cpp

    def stage(name: str) -> None:
        print(f"stage {name}", flush=True)

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    stage("loading the vocabulary")
    model = llama_cpp.llama_model_load_from_file(path.encode(), params)
    if not model:
        return REFUSED
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    piece = ctypes.create_string_buffer(512)
    stage("turning tokens into text")
    control = []
    for tid in range(n_vocab):
        n = llama_cpp.llama_token_to_piece(vocab, tid, piece, len(piece), 0, True)
        if llama_cpp.llama_vocab_is_control(vocab, tid) and 0 < n <= len(piece):
            control.append(piece.raw[:n])
    stage("tokenizing text")
    texts = [coverage_text().encode("utf-8"), b" ".join(control[:4096]) + b"\nuser\nHi"]
    for data in texts:
        out = (llama_cpp.llama_token * (len(data) + 8))()
        for add_special, parse_special in ((True, True), (False, False)):
            n = llama_cpp.llama_tokenize(vocab, data, len(data), out, len(out), add_special, parse_special)
            for tid in out[:max(n, 0)]:
                llama_cpp.llama_token_to_piece(vocab, tid, piece, len(piece), 0, False)
    llama_cpp.llama_model_free(model)
    stage("done")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
