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

Adapters too (`probe_adapter`, called by `Engine.load_adapter` before the engine lock): an adapter
GGUF whose `adapter.lora.alpha` is stored as an integer or float64 passes our checks but trips a
GGML_ASSERT in `llama_adapter_lora_init` (SIGABRT). The child loads the base (memory-mapped, on the
CPU), the adapter, and decodes two tokens with it applied. Remembered in `probes/adapter-<digest>.json`,
the digest over the adapter's header and the base's (tensor values cannot crash llama.cpp; their types,
shapes and offsets, all in the header, can; a truncated file is refused before). Random or trained
adapters of one shape share a header, so a new training run is usually probed already.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import AdapterError, LLMError, ModelError
from .gguf_meta import AdapterInfo, ModelInfo

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


def adapter_record_path(model: ModelInfo, adapter: AdapterInfo) -> Path:
    key = hashlib.sha256(f"{adapter.header_sha256}:{model.header_sha256}".encode()).hexdigest()
    return cache_root() / "probes" / f"adapter-{key}.json"


def _passed(path: Path) -> bool:
    """Whether the record says the file passed a probe under this llama.cpp."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return False  # none yet, or damaged: probing again costs about a second
    return isinstance(data, dict) and data.get("llama_cpp") == _llama_version() and data.get("ok") is True


def passed(info: ModelInfo) -> bool:
    """Whether this model file (by header digest) passed a probe under this llama.cpp."""
    return _passed(record_path(info))


def _remember(path: Path, seconds: float, **facts: object) -> None:
    data = {"ok": True, "llama_cpp": _llama_version(), **facts, "seconds": round(seconds, 3)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), "utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # remembering only saves the next probe


def _run_child(args: list[str], path: Path, timeout: float, err: type[LLMError]) -> tuple[int, float]:
    """(exit code, seconds) of `python -m llm.probe ARGS`; `err` naming `path` when it crashed, hung or
    failed (exit 0: passed; REFUSED: llama.cpp's own error, which the real load reports)."""
    t0 = time.perf_counter()
    env = dict(os.environ, GGML_NO_BACKTRACE="1")  # ggml would attach gdb to print a backtrace: slow, noisy
    try:
        proc = subprocess.run([sys.executable, "-m", "llm.probe", *args], env=env, capture_output=True,
                              text=True, errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise err(f"{path}: llama.cpp did not finish reading it in {timeout:.0f} s (in a test process); "
                  "Home did not load it") from None
    if proc.returncode not in (0, REFUSED):
        raise err(f"{path}: {_why(proc)}; Home did not load it")
    return proc.returncode, time.perf_counter() - t0


def probe_model(path: str | os.PathLike, info: ModelInfo, timeout: float = TIMEOUT_S) -> ProbeResult:
    """Read the model with llama.cpp in a child process unless this file passed before; `ModelError`
    (one line naming the file) when the child crashed, hung or failed."""
    if passed(info):
        return ProbeResult(ran=False)
    code, seconds = _run_child([str(path)], Path(path), timeout, ModelError)
    if code == 0:
        _remember(record_path(info), seconds, fingerprint=info.fingerprint, name=info.name, file=info.path)
    return ProbeResult(ran=True, seconds=seconds)


def probe_adapter(path: str | os.PathLike, adapter: AdapterInfo, model: ModelInfo,
                  timeout: float = TIMEOUT_S) -> ProbeResult:
    """Load the adapter onto `model` and decode with it in a child process, unless this adapter header on
    this base passed before; `AdapterError` (one line naming the adapter) when the child crashed, hung
    or failed. Call it after `check_adapter_fits`: a refused file never starts a child."""
    record = adapter_record_path(model, adapter)
    if _passed(record):
        return ProbeResult(ran=False)
    code, seconds = _run_child(["--adapter", model.path, str(path)], Path(path), timeout, AdapterError)
    if code == 0:
        _remember(record, seconds, file=str(path), base=model.path)
    return ProbeResult(ran=True, seconds=seconds)


def _why(proc: subprocess.CompletedProcess) -> str:
    """One line: how the child ended, at which step, and llama.cpp's last words."""
    stages = [ln.removeprefix("stage ") for ln in proc.stdout.splitlines() if ln.startswith("stage ")]
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    what = next((ln.split("what():", 1)[1].strip() for ln in reversed(lines) if "what():" in ln), None)
    what = what or next((ln for ln in reversed(lines) if "GGML_ASSERT" in ln or "error" in ln.lower()), None)
    what = what or (lines[-1] if lines else "no message")
    what = what[what.index("GGML_ASSERT"):] if "GGML_ASSERT" in what else what  # not the build's source path
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


def _adapter_child(model_path: str, adapter_path: str) -> int:
    import ctypes

    import llama_cpp

    def stage(name: str) -> None:
        print(f"stage {name}", flush=True)

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0  # memory-mapped on the CPU: nothing read but the pages the two tokens touch
    stage("loading the base model")
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), params)
    if not model:
        return REFUSED
    stage("loading the adapter")
    adapter = llama_cpp.llama_adapter_lora_init(model, adapter_path.encode())
    if not adapter:
        return REFUSED
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 16
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        return REFUSED
    stage("decoding with the adapter")
    handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    if llama_cpp.llama_set_adapters_lora(ctx, handles, 1, (ctypes.c_float * 1)(1.0)) != 0:
        return REFUSED
    vocab = llama_cpp.llama_model_get_vocab(model)
    first = max(llama_cpp.llama_vocab_bos(vocab), 0)
    tokens = (llama_cpp.llama_token * 2)(first, min(1, llama_cpp.llama_vocab_n_tokens(vocab) - 1))
    if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, 2)) != 0:
        return REFUSED
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_adapter_lora_free(adapter)
    llama_cpp.llama_model_free(model)
    stage("done")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--adapter":
        sys.exit(_adapter_child(sys.argv[2], sys.argv[3]))
    sys.exit(_child(sys.argv[1]))
