"""A small HTTP client for OpenAI-compatible servers: JSON calls and a server-sent-event stream.

Why the standard library and not a client package: Home needs four things (a JSON GET/POST, an SSE
stream it can cut by closing the socket, a bearer key, a timeout) and every failure turned into one
line that says what to do. `http.client` gives all four with no new dependency.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ..errors import LLMError


class ServerError(LLMError):
    """The server could not be reached or refused a request; the message is one line."""


class StreamCut(ServerError):
    """The event stream ended before the server said it was done (a crash, a restart, a dropped link)."""


class Http:
    """One server at `url` (http or https, with an optional path prefix), with an optional API key."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0,
                 connect_timeout: float = 10.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"{url}: not a server URL (expected http://HOST:PORT)")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        if self._prefix.endswith("/v1"):  # people paste the OpenAI base URL; the native routes sit above it
            self._prefix = self._prefix[:-3]
            self.url = self.url[:-3]
        self.api_key = api_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.hint_404 = "is this a llama-server?"  # what a 404 most likely means for this kind of server

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except ConnectionRefusedError:
            raise ServerError(f"{self.url}: connection refused (is the server running? `home serve` starts one)") from None
        except TimeoutError:
            raise ServerError(f"{self.url}: no connection within {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise ServerError(f"{self.url}: cannot connect ({exc.strerror or exc})") from None
        conn.sock.settimeout(timeout)
        return conn

    def _send(self, method: str, path: str, body: Any, timeout: float) -> tuple[Any, Any]:
        conn = self._connect(timeout)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            conn.request(method, self._prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise ServerError(f"{self.url}{path}: no answer within {timeout:g} s") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            conn.close()
            raise ServerError(f"{self.url}{path}: the connection failed ({exc.__class__.__name__}: {exc})") from None
        if resp.status >= 400:
            detail = _error_detail(resp.read())
            conn.close()
            raise ServerError(self._status_line(resp.status, path, detail))
        return conn, resp

    def _status_line(self, status: int, path: str, detail: str) -> str:
        where = f"{self.url}{path}"
        if status == 401:
            key = "a wrong API key" if self.api_key else "no API key"
            return f"{where}: 401 unauthorized: Home sent {key} ([backend] api_key in config.toml or $HOME_API_KEY)"
        if status == 404:
            return f"{where}: 404 not found{': ' + detail if detail else ''} ({self.hint_404})"
        if status == 503:
            return f"{where}: 503 the server is still loading its model{': ' + detail if detail else ''}"
        return f"{where}: HTTP {status}{': ' + detail if detail else ''}"

    def get(self, path: str, timeout: float | None = None) -> Any:
        return self._json("GET", path, None, timeout)

    def post(self, path: str, body: Any, timeout: float | None = None) -> Any:
        return self._json("POST", path, body, timeout)

    def post_text(self, path: str, body: Any, timeout: float | None = None) -> str:
        """POST `body` and return the answer as text (vLLM's adapter routes answer in plain text)."""
        return self._raw("POST", path, body, timeout).decode("utf-8", "replace")

    def _raw(self, method: str, path: str, body: Any, timeout: float | None) -> bytes:
        timeout = self.timeout if timeout is None else timeout
        conn, resp = self._send(method, path, body, timeout)
        try:
            return resp.read()
        except TimeoutError:
            raise ServerError(f"{self.url}{path}: no answer within {timeout:g} s") from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise ServerError(f"{self.url}{path}: the connection failed ({exc.__class__.__name__})") from None
        finally:
            conn.close()

    def _json(self, method: str, path: str, body: Any, timeout: float | None) -> Any:
        raw = self._raw(method, path, body, timeout)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise ServerError(f"{self.url}{path}: the answer is not JSON ({raw[:80]!r})") from None

    def events(self, path: str, body: Any, timeout: float | None = None) -> Iterator[dict]:
        """POST `body` and yield each `data:` event as a dict until `[DONE]`. Closing the generator
        closes the socket, which is how a reply is cancelled (the server stops decoding). A stream that
        ends without `[DONE]` raises `StreamCut`."""
        timeout = self.timeout if timeout is None else timeout
        conn, resp = self._send("POST", path, body, timeout)
        try:
            while True:
                try:
                    line = resp.readline()
                except TimeoutError:
                    raise ServerError(f"{self.url}{path}: no token within {timeout:g} s") from None
                except (ConnectionError, http.client.HTTPException, OSError):
                    raise StreamCut(f"{self.url}{path}: the stream was cut mid-reply") from None
                if not line:
                    raise StreamCut(f"{self.url}{path}: the stream ended mid-reply")
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, `event:` lines
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                try:
                    event = json.loads(payload)
                except ValueError:
                    raise ServerError(f"{self.url}{path}: a stream event is not JSON ({payload[:80]!r})") from None
                if isinstance(event, dict) and "error" in event:
                    raise ServerError(f"{self.url}{path}: {_error_detail(payload)}")
                yield event
        finally:
            conn.close()


def _error_detail(raw: bytes) -> str:
    """The server's own message from an OpenAI-style error body, on one line."""
    try:
        body = json.loads(raw)
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        msg = raw.decode("utf-8", "replace")
    return " ".join(str(msg or "").split())[:200]
