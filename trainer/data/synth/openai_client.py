"""Generation on any OpenAI-compatible chat-completions endpoint (a local llama.cpp/vLLM/Ollama server
or a hosted API), over stdlib HTTP: only when the user passes --endpoint, never by default.

The URL may be the server root, its `/v1`, or the full `/v1/chat/completions`. An API key, when the
endpoint needs one, comes from HOME_SYNTH_API_KEY (or OPENAI_API_KEY) and is never printed. Every
failure is one line naming the URL and the HTTP status (or the network reason); rate limits and server
errors (429, 5xx) are retried a few times with a growing pause first; a timeout is not retried.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from llm.params import GenParams
from trainer.data.synth import EndpointError, SynthError
from trainer.data.synth.local import Reply

RETRY_STATUSES = (429, 500, 502, 503, 504)


def chat_url(url: str) -> str:
    """`http://host:8000`, `…/v1` or `…/v1/chat/completions` → the chat-completions URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SynthError(f"--endpoint {url!r}: expected an http:// or https:// URL")
    base = url.strip().rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions" if parts.path.rstrip("/").endswith("/v1") else f"{base}/v1/chat/completions"


class OpenAIGenerator:
    """`generator(messages, params) -> Reply` over HTTP; `model` is the endpoint's model name."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 2, backoff: float = 1.0) -> None:
        self.url = chat_url(url)
        self.model = model
        self.api_key = api_key if api_key is not None else (
            os.environ.get("HOME_SYNTH_API_KEY") or os.environ.get("OPENAI_API_KEY"))
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.label = f"openai:{self.url} model={model}"

    def __call__(self, messages: list[dict], params: GenParams) -> Reply:
        body = {"model": self.model, "messages": messages, "temperature": params.temperature,
                "top_p": params.top_p, "max_tokens": params.max_tokens}
        if params.seed >= 0:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        data = self._post(body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.url}: the response is not a chat completion "
                                "(no choices[0].message.content)") from None
        return Reply(text, str(choice.get("finish_reason") or "stop"))

    def _post(self, body: dict) -> dict:
        payload = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(self.backoff * (2 ** attempt))
                    continue
                raise EndpointError(f"{self.url}: HTTP {exc.code} {exc.reason}{_detail(exc)}") from None
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, TimeoutError):
                    reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
                    raise EndpointError(f"{self.url}: cannot connect ({reason})") from None
                raise EndpointError(f"{self.url}: no answer within {self.timeout:g} s (timed out)") from None
            except TimeoutError:  # a slow server does not get faster when asked again: no retry
                raise EndpointError(f"{self.url}: no answer within {self.timeout:g} s (timed out)") from None
            except OSError as exc:
                raise EndpointError(f"{self.url}: connection failed ({exc.strerror or exc})") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EndpointError(f"{self.url}: the response is not JSON ({raw[:60]!r})") from None
        if not isinstance(data, dict):
            raise EndpointError(f"{self.url}: the response is not a JSON object")
        return data


def _detail(exc: urllib.error.HTTPError) -> str:
    """The server's own one-line reason, when its error body has one (OpenAI: error.message)."""
    try:
        body = exc.read(2000).decode("utf-8", "replace")
        data = json.loads(body)
        msg = data.get("error", {}).get("message") if isinstance(data.get("error"), dict) else data.get("detail")
        msg = msg if isinstance(msg, str) else None
    except (ValueError, AttributeError, OSError):
        msg = None
    if not msg:
        return ""
    msg = " ".join(msg.split())
    return f": {msg[:120]}"
