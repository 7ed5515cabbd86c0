"""`LlamaServerBackend`: the `Backend` protocol over llama.cpp's `llama-server` and its HTTP API.

The model lives in the server (another process, or another machine with a GPU); Home keeps the same
GGUF locally for what it decides before a reply: the fingerprint adapters are checked against and the
chat template for the context policy (only its metadata is read; token counts come from the server's
`/tokenize`, so no weights or vocabulary are loaded here).

Adapters: llama-server loads its LoRAs at start (`--lora FILE … --lora-init-without-apply`, all at
scale 0) and numbers them; `GET /lora-adapters` lists them. `load_adapter` maps Home's id to that number
(refusing, with the file named, one the server does not hold) and each request carries
`"lora": [{"id": N, "scale": S}, …]` with EVERY held adapter and an explicit scale, 0 for the inactive
ones: a server does not reliably zero what a request leaves out. The server applies the chat template,
stop strings and sampling; a reply is cancelled by closing its stream.

Slots: on a server with two or more (`/props` `total_slots`; `home serve` starts two, llm/servers/process.py)
every call aside names slot 0 (`id_slot`), so a distillation between turns leaves the chat's cached
prompt where it is. The chat names none: llama-server gives a first request its LAST free slot and then
keeps a prompt in the slot holding its prefix. Pinning the chat as well broke the other common layout
(plain `llama-server -m …`: four slots over a unified KV that moves idle slots to its RAM cache and
clears them; a pinned request is never restored from there: every turn re-read the whole chat), and an
aside in the last slot evicted the chat's first turn (both measured). With one slot nothing is named.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..decode import MIN_P
from ..errors import AdapterError
from ..gguf_meta import AdapterInfo, ModelInfo, check_adapter_fits, read_adapter_info
from ..params import GenParams
from ..template import ChatTemplate
from .http import ServerError
from .remote import Message, RemoteBackend, Stack


def _n_params(info: ModelInfo) -> int:
    total = 0
    for shape in info.tensors.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


class LlamaServerBackend(RemoteBackend):
    """Replies from a running llama-server at `url`, for the base model at `model_path`. An adapter the
    server does not hold is refused, saying what to do (`home serve` restarts its own server with every
    newly registered adapter, between turns)."""

    kind = "llama-server"

    def __init__(self, url: str, model_path: str | os.PathLike, api_key: str | None = None,
                 timeout: float = 600.0) -> None:
        super().__init__(url, model_path, api_key, timeout)
        self.template = ChatTemplate(self.info.chat_template, self.info.bos_token, self.info.eos_token)
        self._held: list[dict] = []  # GET /lora-adapters: [{id, path, scale}]
        self.slots = 1  # the server's `total_slots`: with 2 or more, calls aside go to slot 0
        self.fetch = None  # fetch(id, path): the vault's `home serve` restarts with it (home/serve_link.py)
        self.n_ctx = self._check_server()

    # --- the server ---------------------------------------------------------------------------

    def _check_server(self) -> int:
        """The server's context size, after checking it runs this base model (`ModelError`-like
        `ServerError` naming both otherwise)."""
        models = self.http.get("/v1/models", timeout=min(30.0, self.http.timeout))
        data = (models or {}).get("data") or [{}]
        meta = data[0].get("meta") or {}
        ours = {"n_embd": self.info.n_embd, "n_params": _n_params(self.info)}
        diff = [f"{k} {meta[k]} (ours {v})" for k, v in ours.items() if k in meta and int(meta[k]) != v]
        if diff:
            raise ServerError(
                f"{self.url}: the server runs another model ({data[0].get('id', '?')}: {', '.join(diff)}) "
                f"than {self.path} ({self.info.name}); adapters made for one do not fit the other"
            )
        self._held = self._read_held()
        props = self.http.get("/props", timeout=min(30.0, self.http.timeout)) or {}
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or meta.get("n_ctx")
        slots = props.get("total_slots")
        self.slots = slots if isinstance(slots, int) and slots > 0 else 1
        return int(n_ctx or self.info.n_ctx_train)

    def _read_held(self) -> list[dict]:
        try:
            held = self.http.get("/lora-adapters", timeout=min(30.0, self.http.timeout))
        except ServerError as exc:
            if "404" in str(exc):
                raise ServerError(f"{self.url}: the server has no /lora-adapters (not a llama-server?)") from None
            raise
        return [a for a in held or [] if isinstance(a, dict) and "id" in a]

    def _server_id(self, adapter_id: str, path: Path) -> int | None:
        """The server's number for `path`: the same file, else the same `<id>/<file name>` (a vault's
        adapters live in `adapters/<id>/`, so a server on another machine with a copy of the vault matches)."""
        real = os.path.realpath(path)
        tail = (adapter_id, path.name)
        for a in self._held:
            theirs = str(a.get("path", ""))
            if os.path.realpath(theirs) == real or tuple(Path(theirs).parts[-2:]) == tail:
                return int(a["id"])
        return None

    # --- adapters -----------------------------------------------------------------------------

    def load_adapter(self, adapter_id: str, path: str | os.PathLike) -> AdapterInfo:
        """Check the adapter fits the base and that the server holds it; it is not applied until a
        stack names it."""
        path = Path(path).resolve()
        have = self._loaded.get(adapter_id)
        if have is not None and have[0] == path:
            return have[1]
        info = read_adapter_info(path)
        check_adapter_fits(self.info, info, path)
        with self._lock:
            if self._server_id(adapter_id, path) is None:
                self._held = self._read_held()
            if self._server_id(adapter_id, path) is None and self.fetch is not None:
                self.fetch(adapter_id, path)
                self._held = self._read_held()
            if self._server_id(adapter_id, path) is None:
                raise AdapterError(
                    f"adapter '{adapter_id}': the server at {self.url} does not hold it (start it with it: "
                    f"`home serve --adapter {adapter_id}`, or llama-server --lora {path} --lora-init-without-apply)"
                )
            self._loaded[adapter_id] = (path, info)
        return info

    def lora_field(self, stack: Sequence[tuple[str, float]]) -> list[dict]:
        """The request's `lora`: every adapter the server holds, the stack's at their scales, the rest 0."""
        scales = {int(a["id"]): 0.0 for a in self._held}
        for adapter_id, scale in stack:
            path = self._loaded[adapter_id][0]
            sid = self._server_id(adapter_id, path)
            if sid is None:
                raise AdapterError(f"{path}: the server at {self.url} no longer holds this adapter (restarted?)")
            scales[sid] = scales.get(sid, 0.0) + scale
        return [{"id": i, "scale": s} for i, s in sorted(scales.items())]

    # --- tokens and the context policy ----------------------------------------------------------

    def render(self, messages: Sequence[Message]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def tokenize(self, text: str) -> list[int]:
        """The server's tokens for prompt text (special tokens parsed; BOS added when the model wants
        one and the text does not start with it, as `Engine.tokenize`)."""
        bos = self.info.bos_token
        add = not (bos and text.startswith(bos))
        out = self.http.post("/tokenize", {"content": text, "add_special": add, "parse_special": True})
        return [int(t) for t in (out or {}).get("tokens", [])]

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenize(self.render(messages)))

    # --- generation ---------------------------------------------------------------------------

    def request(self, messages: Sequence[Message], params: GenParams, stack: Sequence[tuple[str, float]]) -> dict:
        """The `/v1/chat/completions` body for one reply."""
        return {
            "messages": [dict(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "min_p": MIN_P,
            "repeat_penalty": params.repeat_penalty,
            "seed": params.seed if params.seed >= 0 else int.from_bytes(os.urandom(4), "little"),
            "max_tokens": params.max_tokens,
            "stop": list(params.stop),
            "lora": self.lora_field(stack),
        }

    def _route(self, body: dict, aside: bool) -> None:
        if aside and self.slots >= 2:  # the chat: the server's own choice (see the module's docstring)
            body["id_slot"] = 0

    def _body(self, messages: Sequence[Message], params: GenParams, stack: Stack) -> tuple[dict, Stack]:
        # The server's numbering, read for every reply: a restarted server numbers its list anew.
        self._held = self._read_held()
        return self.request(messages, params, stack), stack
