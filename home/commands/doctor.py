"""`home doctor`: is everything Home needs here and usable? One line per check, exit 1 if any fails."""

from __future__ import annotations

import argparse
import os
import stat
import time

from home.context import Context


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the model, llama.cpp, the GPU and the vault",
                       description="Checks the model loads, llama.cpp's version, whether a GPU is "
                                   "visible, and that the vault is private (dirs 0700, files 0600).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = Context(args)
    failures = 0

    def line(ok: bool | None, what: str, detail: str) -> None:
        nonlocal failures
        mark = {True: "ok  ", False: "FAIL", None: "info"}[ok]
        failures += ok is False
        print(f"[{mark}] {what:<10} {detail}")

    import llama_cpp

    from llm.offload import describe_offload, vram

    line(None, "llama.cpp", f"llama-cpp-python {llama_cpp.__version__}; {describe_offload()}")
    try:  # everything but llama.cpp and the GPU reads the vault: one finding, not the same error four times
        _ = ctx.vault
    except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
        line(None, "model", "not checked: the vault (below) cannot be opened, and its config names the model")
        line(None, "gpu", vram())
        line(False, "vault", str(exc))
        return 1
    try:
        path = ctx.model_path
        info = ctx.model_info
        t0 = time.perf_counter()
        engine = ctx.engine(n_ctx=512)
        n = len(engine.tokenize("hello"))
        line(True, "model", f"{info.name} ({info.arch}, {path.stat().st_size / 2**20:.0f} MiB) loads in "
                            f"{time.perf_counter() - t0:.2f} s, tokenizes ({n} token{'s' if n != 1 else ''}), {path}")
        line(None, "offload", _layers(engine.offload))
    except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
        line(False, "model", str(exc))
    line(None, "gpu", vram())  # after the model loaded: the VRAM it takes is in "used"
    try:
        backend_url = ctx.backend_url
    except Exception as exc:  # noqa: BLE001 - a broken config.toml is one finding; the checks below go on
        line(False, "config", str(exc))
        backend_url = ""
    if backend_url:
        line(*_backend(ctx))
    line(*_vault_privacy(ctx))
    line(*_leftovers(ctx))
    try:
        m = ctx.manifest()
        from vault.personas import list_personas

        builtin = sum(p.builtin for p in list_personas(ctx.vault, []))
        # "0 personas" beside the three `personas list` shows read as "the personas are missing"
        line(True, "manifest", f"{len(m.adapters)} adapters, {len(m.personas)} imported personas (and {builtin} "
                               f"built-in), {len(m.users)} registered users (by a voice adapter or Switch user)")
    except Exception as exc:  # noqa: BLE001
        line(False, "manifest", str(exc))
    return 1 if failures else 0


def _backend(ctx: Context) -> tuple[bool, str, str]:
    """The configured server answers, runs this model, and which adapters it holds."""
    try:
        server = ctx.backend()
        held = server.held() if server.kind == "vllm" else server.http.get("/lora-adapters") or []
    except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
        return False, "backend", str(exc)
    return True, "backend", f"{server.backend} runs {server.info.name} (n_ctx {server.n_ctx}), {len(held)} adapter(s)"


def _layers(offload) -> str:
    """How many layers run on the GPU, and why none do when some were asked for."""
    if offload.requested and not offload.built_in:
        asked = "all" if offload.requested < 0 else offload.requested
        return f"0/{offload.total} layers on the GPU: asked for {asked}, but this llama.cpp cannot offload"
    return str(offload)


def _vault_privacy(ctx: Context) -> tuple[bool, str, str]:
    root = ctx.vault.root
    loose = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if stat.S_IMODE(os.stat(p).st_mode) & 0o077:
                loose.append(p)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if stat.S_IMODE(os.lstat(p).st_mode) & 0o077:
                loose.append(p)
    if stat.S_IMODE(os.stat(root).st_mode) & 0o077:
        loose.insert(0, str(root))
    if loose:
        return False, "vault", f"{root}: readable by others: {', '.join(loose[:5])}" + (" …" if len(loose) > 5 else "")
    return True, "vault", f"{root} is private (dirs 0700, files 0600)"


def _leftovers(ctx: Context) -> tuple[bool | None, str, str]:
    """What a killed write left (temps of dead processes, adapter folders the manifest does not name):
    reported here, put right by the next `home train` (never by doctor, which only looks)."""
    from vault.orphans import find_leftovers

    root = ctx.vault.root
    found = find_leftovers(ctx.vault)
    if not found:
        return True, "leftovers", "none (no temp files of dead processes, no unregistered adapter folders)"
    shown = "; ".join(lo.describe(root) for lo in found[:5]) + (f"; … {len(found) - 5} more" if len(found) > 5 else "")
    return None, "leftovers", f"{len(found)} from an interrupted write, put right by the next `home train`: {shown}"
