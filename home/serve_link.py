"""How a turn reaches an adapter that the vault's own `home serve` was not started with.

`home serve` starts llama-server with the adapters in reach only (`Manifest.in_reach`: each name's
newest version, each user's voice, what they stack on), not every version ever trained (a weekly voice
for 3 years: 156+). It announces itself in `<vault>/serve/server.json` (its URL and pid). A Home on the
same vault whose backend is that URL asks for an older version by touching `serve/want/<id>` and waits:
the serve loop adds it and restarts the server between turns, as it does for a newly registered
adapter. Any other server (started by hand, or on another machine) refuses the adapter in one line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from llm.errors import AdapterError
from vault.fsio import atomic_write_text, pid_alive
from vault.layout import Vault

WAIT_S = 300.0  # a restart waits for the server to be idle, then for llama-server to load


def serve_dir(vault: Vault) -> Path:
    return vault.root / "serve"


def forget_wants(vault: Vault) -> None:
    """Drop what turns asked an earlier server for: a new one starts with the adapters in reach."""
    d = serve_dir(vault) / "want"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d.parent, 0o700)
    for f in d.iterdir():
        f.unlink(missing_ok=True)


def announce(vault: Vault, url: str) -> None:
    """Say this process's server at `url` serves the vault (pid included: a dead one serves nothing)."""
    atomic_write_text(serve_dir(vault) / "server.json", json.dumps({"url": url, "pid": os.getpid()}))


def withdraw(vault: Vault) -> None:
    (serve_dir(vault) / "server.json").unlink(missing_ok=True)


def wanted(vault: Vault) -> set[str]:
    """Ids a turn asked the server for."""
    d = serve_dir(vault) / "want"
    return {f.name for f in d.iterdir()} if d.is_dir() else set()


LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def same_server(a: str, b: str) -> bool:
    """Whether two URLs name one server: `http://localhost:8080/` is `home serve`'s `http://127.0.0.1:8080`."""
    from urllib.parse import urlsplit

    def key(url: str) -> tuple:
        try:
            u = urlsplit(url.strip().rstrip("/"))
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            return (url,)
        host = (u.hostname or "").lower()
        return u.scheme.lower(), "loopback" if host in LOOPBACK else host, port, u.path

    return key(a) == key(b)


def served_by_home(vault: Vault, url: str) -> bool:
    """Whether `url` is a live `home serve` of this vault."""
    try:
        state = json.loads((serve_dir(vault) / "server.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(state, dict) and isinstance(state.get("url"), str) and same_server(state["url"], url)
            and isinstance(state.get("pid"), int) and state["pid"] > 0 and pid_alive(state["pid"]))


def fetcher(vault: Vault, url: str, api_key: str | None, wait_s: float = WAIT_S):
    """`fetch(adapter_id, path)` for `LlamaServerBackend.fetch`: ask the vault's `home serve` for the
    adapter and return once the server holds it (raises AdapterError, one line, when it does not in time)."""
    from llm.servers.http import Http, ServerError

    def fetch(adapter_id: str, path: Path) -> None:
        if not served_by_home(vault, url):
            return  # it stopped, or another server took the port: the backend refuses as before
        want = serve_dir(vault) / "want" / adapter_id
        want.touch(mode=0o600)
        http = Http(url, api_key, timeout=10, connect_timeout=2)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                held = http.get("/lora-adapters") or []
            except ServerError:
                held = []  # restarting
            if any(tuple(Path(str(a.get("path", ""))).parts[-2:]) == (adapter_id, path.name) for a in held
                   if isinstance(a, dict)):
                return
            if not served_by_home(vault, url):
                break
            time.sleep(0.5)
        raise AdapterError(f"adapter '{adapter_id}': `home serve` at {url} did not restart with it within "
                           f"{wait_s:g} s (is a turn still running there?)")

    return fetch
