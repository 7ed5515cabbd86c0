"""The app's persona switch, key to effect, next to the engine's own `set_adapters`; and startup time.

Why: the engine's hot swap is fast (bench/switch_latency.py); this checks the app adds little on top of
it. A switch counts as effective when the app's stack worker has the new stack active on the engine
(ChatScreen.stack_applied). Two bench personas (F5, F6) each carry a random rank-16 LoRA, so every key
press really changes the stack. Startup: App start → chat screen mounted with the prompt focused
(interactive), and → model loaded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import _common as c


def make_vault(root: Path, model: Path) -> None:
    """A vault with adapters a0, a1 registered and personas bench-a (f5) / bench-b (f6) using them."""
    from llm.gguf_meta import read_model_info
    from vault.layout import Vault
    from vault.manifest import AdapterEntry, ManifestStore

    vault = Vault.open(root)
    fp = read_model_info(model).fingerprint
    with ManifestStore(vault).update() as m:
        for i in range(2):
            target = vault.adapters_dir / f"a{i}" / "adapter.gguf"
            target.parent.mkdir(parents=True)
            c.random_adapter(model, target, seed=i)
            m.add_adapter(AdapterEntry(id=f"a{i}", name=f"a{i}", file=f"adapters/a{i}/adapter.gguf",
                                       base={"fingerprint": fp, "name": "bench"}, kind="persona"))
    for i, key in enumerate(("f5", "f6")):
        card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
            "name": f"Bench {'AB'[i]}", "system_prompt": "You are a bench persona.",
            "extensions": {"home": {"hotkey": key, "adapters": [{"id": f"a{i}", "scale": 1.0}]}}}}
        (vault.personas_dir / f"bench-{'ab'[i]}.json").write_text(json.dumps(card))


async def run_app(vault: Path, model: Path, iters: int, n_ctx: int) -> tuple[list[float], float, float, list, list]:
    from home.app import AppOptions, HomeApp
    from home.app.widgets.prompt_input import PromptInput

    app = HomeApp(AppOptions(vault=vault, model=model, user="me", n_ctx=n_ctx))
    t0 = time.perf_counter()
    interactive = loaded = 0.0
    switches: list[float] = []
    async with app.run_test(size=(100, 30)) as pilot:
        while not interactive:
            if app.chat is not None and app.chat.query_one(PromptInput).has_focus:
                interactive = time.perf_counter() - t0
            await asyncio.sleep(0.001)
        while not (app.session.ready and app.chat.stack_applied is not None):
            await asyncio.sleep(0.001)
        loaded = time.perf_counter() - t0
        for i in range(iters + 2):  # the first two load each adapter once: warm-up
            key, want = ("f5", [("a0", 1.0)]) if i % 2 == 0 else ("f6", [("a1", 1.0)])
            start = time.perf_counter()
            await pilot.press(key)
            while app.chat.stack_applied != want or app.session.engine.adapters != want:
                await asyncio.sleep(0.0002)
            if i >= 2:
                switches.append(time.perf_counter() - start)
        harness = []  # what Pilot.press itself costs: a key nothing is bound to
        for _ in range(iters):
            start = time.perf_counter()
            await pilot.press("f12")
            harness.append(time.perf_counter() - start)
        engine = app.session.engine
        raw = []
        for i in range(iters):
            stack = [("a0", 1.0)] if i % 2 == 0 else [("a1", 1.0)]
            start = time.perf_counter()
            engine.set_adapters(stack)
            raw.append(time.perf_counter() - start)
    app.close_engine()
    return switches, interactive, loaded, raw, harness


def main() -> None:
    args = c.parser(__doc__.splitlines()[0], iters=50).parse_args()
    model = c.model_path(args.model)
    root = Path(tempfile.mkdtemp(prefix="home-bench-"))
    try:
        make_vault(root / "v", model)
        switches, interactive, loaded, raw, harness = asyncio.run(run_app(root / "v", model, args.iters, args.n_ctx))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ms = lambda xs, q: c.pct(xs, q) * 1000  # noqa: E731
    print(f"persona switch over {args.iters} key presses (n_ctx {args.n_ctx}):")
    print(f"  {'':28} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"  {'app: key → stack active':28} {ms(switches, 50):9.2f} {ms(switches, 99):9.2f}")
    print(f"  {'pilot.press, unbound key':28} {ms(harness, 50):9.2f} {ms(harness, 99):9.2f}  (harness cost)")
    print(f"  {'engine.set_adapters alone':28} {ms(raw, 50):9.2f} {ms(raw, 99):9.2f}")
    app_only = ms(switches, 50) - ms(harness, 50)
    print(f"  app cost at p50, harness subtracted: {app_only:.2f} ms")
    print("startup:")
    print(f"  app start → prompt focused (interactive): {interactive * 1000:8.1f} ms")
    print(f"  app start → model loaded:                 {loaded * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
