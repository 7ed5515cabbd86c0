"""`VllmBackend`: the `Backend` protocol over a vLLM server's OpenAI API (`vllm serve … --enable-lora`).

vLLM serves a transformers (HF) model, not a GGUF: the base a user serves for Home is the trainer's
dequantized copy of Home's GGUF (`$HOME_CACHE/bases/<fingerprint>-…/`, trainer/worker/base_cache.py),
so the weights are the ones llama.cpp runs and the folder's name carries the GGUF's fingerprint, which
is how Home tells the server runs its model. Home keeps its GGUF locally for `info` (the fingerprint
adapters are checked against); the server applies the chat template, tokenizes, samples and stops.

Adapters: vLLM reads PEFT folders, not GGUF LoRAs; registration keeps the trainer's PEFT folder beside
the GGUF (`adapters/<id>/peft/`), and `load_adapter` loads it at run time (`POST /v1/load_lora_adapter`,
the server started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) unless the server already holds it (same
folder, or the same `<id>/peft` tail, as `--lora-modules` at its start). A turn's stack of one adapter
is the request's `model` (the LoRA's name on the server, checked each turn: one a restarted server lost
is loaded again); none is the base model's name. vLLM applies one LoRA per request at its trained
scale: a stack of two or more is served with its top adapter (the highest scale; the first of equals),
a scale other than 1 as 1; `notice` says so, once, and the reply's `Completion.adapters` (what the
turn's log record claims) holds only what was served.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..decode import MIN_P
from ..errors import AdapterError
from ..fingerprint import same_base, short
from ..gguf_meta import AdapterInfo, check_adapter_fits, read_adapter_info
from ..params import GenParams
from .http import ServerError
from .remote import Message, RemoteBackend, Stack

log = logging.getLogger("home.backend")
_FINGERPRINT = re.compile(r"^([0-9a-f]{64})(?:-|$)")  # a base-cache folder's name starts with the GGUF's fingerprint


def fingerprint_in(path: str | None) -> str | None:
    """The GGUF fingerprint a base-cache folder's name carries (`<64 hex>-…`), else None."""
    m = _FINGERPRINT.match(Path(str(path or "")).name)
    return m.group(1) if m else None


def peft_dir_of(path: str | os.PathLike) -> Path:
    """The PEFT folder vLLM reads for a registered adapter: `adapters/<id>/peft` beside its GGUF (or
    `path` itself when it is that folder)."""
    path = Path(path)
    return path if path.is_dir() else path.parent / "peft"


def served_stack(stack: Sequence[tuple[str, float]]) -> tuple[list[tuple[str, float]], str | None]:
    """What vLLM can serve of `stack`, and why it differs (None when it does not): one adapter per
    request at its trained scale. Adapters at scale 0 are off; of two or more the top (highest scale,
    the first of equals) is served."""
    served, notes = _served_and_notes(stack)
    return served, "; ".join(text for _, text in notes) or None


def _served_and_notes(stack: Sequence[tuple[str, float]]) -> tuple[list[tuple[str, float]], list[tuple[tuple, str]]]:
    """`served_stack`'s answer with each rule it applied apart, keyed by the rule and the adapters it
    names (not their scales, which a turn's mode changes): the key is what a user is told once."""
    on = [(i, s) for i, s in stack if s != 0]
    if not on:
        return [], []
    top = max(on, key=lambda a: a[1])  # max keeps the first of equals
    notes = []
    if len(on) > 1:
        rest = [(i, s) for i, s in on if i != top[0]]
        notes.append((("one adapter", top[0], tuple(i for i, _ in rest)),
                      f"vLLM serves one adapter per request: using the top one, {top[0]} ({top[1]:g}), without "
                      + ", ".join(f"{i} ({s:g})" for i, s in rest)))
    if top[1] != 1.0:
        notes.append((("scale", top[0]), f"vLLM applies an adapter at its trained scale: {top[0]} at 1, not {top[1]:g}"))
    return [(top[0], 1.0)], notes


def chat_body(model: str, messages: Sequence[Message], params: GenParams) -> dict:
    """A streamed `/v1/chat/completions` body in vLLM's names (`repetition_penalty`, `min_p`, `top_k`)."""
    return {
        "model": model,
        "messages": [dict(m) for m in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": MIN_P,
        "repetition_penalty": params.repeat_penalty,
        "seed": params.seed if params.seed >= 0 else int.from_bytes(os.urandom(4), "little") >> 1,
        "max_tokens": params.max_tokens,
        "stop": list(params.stop),
    }


class VllmBackend(RemoteBackend):
    """Replies from a running vLLM server at `url`, for Home's base model at `model_path` (its GGUF)."""

    kind = "vllm"

    def __init__(self, url: str, model_path: str | os.PathLike, api_key: str | None = None,
                 timeout: float = 600.0) -> None:
        super().__init__(url, model_path, api_key, timeout)  # `_loaded`: adapter id -> (PEFT folder, GGUF facts)
        self.http.hint_404 = "is this a vLLM server, started with --enable-lora?"
        self._noted: set[tuple] = set()
        self.notices: list[str] = []  # each rule by which a stack was served other than asked, said once
        self.model, self.root, self.n_ctx = self._check_server()

    # --- the server ---------------------------------------------------------------------------

    def models(self) -> list[dict]:
        """`GET /v1/models`: the base model and every LoRA the server holds (those have a `parent`)."""
        out = self.http.get("/v1/models", timeout=min(30.0, self.http.timeout))
        return [m for m in (out or {}).get("data") or [] if isinstance(m, dict) and "id" in m]

    def held(self) -> dict[str, str]:
        """The server's LoRAs: name -> the folder it read them from."""
        return {str(m["id"]): str(m.get("root") or "") for m in self.models() if m.get("parent")}

    def _check_server(self) -> tuple[str, str, int]:
        """The base model's name, folder and context size, after checking the server is vLLM and runs
        this base model (`ServerError` naming both otherwise)."""
        models = self.models()
        base = next((m for m in models if not m.get("parent")), None)
        if base is None or base.get("owned_by") != "vllm":
            owner = (base or {}).get("owned_by", "nothing")
            raise ServerError(f"{self.url}: not a vLLM server (/v1/models lists {owner}); for a llama-server "
                              "set [backend] kind = \"llama-server\"")
        root = str(base.get("root") or base["id"])
        theirs = fingerprint_in(root)
        if theirs is not None and not same_base(theirs, self.info.fingerprint):
            raise ServerError(
                f"{self.url}: the server runs another model ({root}, fingerprint {short(theirs)}) than "
                f"{self.path} ({self.info.name}, fingerprint {short(self.info.fingerprint)}); adapters made "
                "for one do not fit the other"
            )
        n_ctx = int(base.get("max_model_len") or self.info.n_ctx_train)
        if self.info.n_ctx_train and n_ctx > self.info.n_ctx_train:
            raise ServerError(f"{self.url}: the server's model {root} takes {n_ctx} tokens of context, "
                              f"{self.info.name} ({self.path}) only {self.info.n_ctx_train}: another model")
        return str(base["id"]), root, n_ctx

    # --- adapters -----------------------------------------------------------------------------

    def _name_on_server(self, adapter_id: str, peft: Path, held: Mapping[str, str]) -> str | None:
        real = os.path.realpath(peft)
        for name, root in held.items():
            if root and (os.path.realpath(root) == real or tuple(Path(root).parts[-2:]) == (adapter_id, peft.name)):
                return name
        return None

    def load_adapter(self, adapter_id: str, path: str | os.PathLike) -> AdapterInfo:
        """Check the adapter fits the base, then make sure the server holds its PEFT folder (loading it
        at run time if not). `path` is the registered GGUF; its PEFT folder sits beside it."""
        gguf = Path(path).resolve()
        have = self._loaded.get(adapter_id)
        if have is not None and have[0] == peft_dir_of(gguf):
            return have[1]
        info = read_adapter_info(gguf)
        check_adapter_fits(self.info, info, gguf)
        peft = peft_dir_of(gguf)
        cfg = peft / "adapter_config.json"
        try:
            base_of = json.loads(cfg.read_text()).get("base_model_name_or_path")
        except FileNotFoundError:
            raise AdapterError(f"{gguf}: no PEFT folder beside it ({peft}): vLLM loads PEFT adapters, not GGUF "
                               "files (adapters Home trains keep one; a GGUF added by hand has none)") from None
        except (OSError, ValueError, AttributeError) as exc:
            raise AdapterError(f"{cfg}: unreadable ({exc})") from None
        made_for = fingerprint_in(base_of)
        if made_for is not None and not same_base(made_for, self.info.fingerprint):
            raise AdapterError(f"{cfg}: base_model_name_or_path: made for fingerprint {short(made_for)}, the "
                               f"model is {self.info.name} (fingerprint {short(self.info.fingerprint)})")
        with self._lock:
            self._held_name(adapter_id, peft)
            self._loaded[adapter_id] = (peft, info)
        return info

    def _held_name(self, adapter_id: str, peft: Path) -> str:
        """The server's name for `peft` (one it was started with counts, under any name), loading it at
        run time as `adapter_id` when it is not held: a first use, or a server restarted since."""
        held = self.held()
        name = self._name_on_server(adapter_id, peft, held)
        if name is not None:
            return name
        if adapter_id in held:
            raise AdapterError(f"{peft}: the server at {self.url} holds another adapter named "
                               f"{adapter_id!r} ({held[adapter_id]})")
        self._load_on_server(adapter_id, peft)
        return adapter_id

    def _load_on_server(self, name: str, peft: Path) -> None:
        try:
            self.http.post_text("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(peft)})
        except ServerError as exc:
            if ": 404 not found (" in str(exc):  # no such route: FastAPI's bare 404 (an unknown folder says so)
                raise AdapterError(f"{peft}: the server at {self.url} cannot load adapters at run time (start "
                                   "it with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)") from None
            raise AdapterError(f"{peft}: the server at {self.url} did not load it (it reads the folder on its "
                               f"own machine): {exc}") from None

    # --- tokens and the context policy ----------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """The server's tokens for prompt text (BOS added when the tokenizer adds one and the text does
        not start with it, as `Engine.tokenize`)."""
        bos = self.info.bos_token
        add = not (bos and text.startswith(bos))
        out = self.http.post("/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": add})
        return [int(t) for t in (out or {}).get("tokens", [])]

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """The prompt's length as the server renders it (its own chat template)."""
        out = self.http.post("/tokenize", {"model": self.model, "messages": [dict(m) for m in messages],
                                           "add_generation_prompt": True})
        return int((out or {}).get("count") or len((out or {}).get("tokens") or ()))

    # --- generation ---------------------------------------------------------------------------

    def _serve(self, stack: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        """What this request serves of `stack`; each rule that changes it is said the first time it applies."""
        served, notes = _served_and_notes(stack)
        for key, text in notes:
            if key not in self._noted:
                self._noted.add(key)
                self.notices.append(text)
                log.warning("%s: %s", self.url, text)
        return served

    def request(self, messages: Sequence[Message], params: GenParams, served: Sequence[tuple[str, float]]) -> dict:
        """The `/v1/chat/completions` body for one reply: `model` is the served adapter's name on the
        server (checked, and loaded again if the server lost it), or the base model's."""
        model = self.model
        if served:
            adapter_id = served[0][0]
            model = self._held_name(adapter_id, self._loaded[adapter_id][0])
        return chat_body(model, messages, params)

    def _body(self, messages: Sequence[Message], params: GenParams, stack: Stack) -> tuple[dict, Stack]:
        served = self._serve(stack)
        return self.request(messages, params, served), served
