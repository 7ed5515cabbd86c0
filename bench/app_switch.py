"""The app's persona switch, action to effect, next to the engine's own `set_adapters`; and startup time.

Why: the engine's hot swap is fast (bench/switch_latency.py); this checks the app adds little on top of
it. Pilot's key press alone costs tens of ms, so the app's own work is timed from the action handler
starting to the engine's stack being set; "before" replays the previous switch (note first, worker
thread, manifest parsed per read) in the same run, so the two columns compare like with like. Two
bench personas (F5, F6) each carry a random rank-16 LoRA, so every key press really changes the stack.
Startup: App start → chat screen mounted with the prompt focused
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


async def legacy_switch(chat, pid: str | None) -> None:
    """ChatScreen.switch_persona as it was before the switch was made direct (for the side-by-side):
    the note mounted first, the stack applied by a new worker thread, the manifest parsed on each read."""
    from home.app.widgets.persona_bar import PersonaBar

    persona = chat.session.persona_by_id(pid)
    stack = chat.session.set_persona(persona)
    chat.query_one(PersonaBar).active = pid
    await chat.note(f"— persona: {persona.name if persona else 'base'} · adapters {stack} —")
    chat.stack_applied = None
    chat.refresh_status()
    chat._apply_stack()


def instrument(app) -> dict:
    """Timestamps of the app's own work: action handler entered, engine stack set (Pilot excluded)."""
    marks: dict = {}
    action, engine = app.action_persona, app.session.engine
    set_adapters = engine.set_adapters

    async def timed_action(pid: str) -> None:
        marks["action"] = time.perf_counter()
        await action(pid)

    def timed_set(stack):
        changed = set_adapters(stack)
        marks["set"] = time.perf_counter()
        return changed

    app.action_persona, engine.set_adapters = timed_action, timed_set
    return marks


async def switches(pilot, app, marks: dict, iters: int) -> tuple[list[float], list[float]]:
    """Alternate F5/F6 `iters` times (after two warm-up presses): key → active, and action → set."""
    key_to_active, action_to_set = [], []
    for i in range(iters + 2):  # the first two load each adapter once: warm-up
        key, want = ("f5", [("a0", 1.0)]) if i % 2 == 0 else ("f6", [("a1", 1.0)])
        start = time.perf_counter()
        await pilot.press(key)
        while app.chat.stack_applied != want or app.session.engine.adapters != want:
            await asyncio.sleep(0.0002)
        if i >= 2:
            key_to_active.append(time.perf_counter() - start)
            action_to_set.append(marks["set"] - marks["action"])
    return key_to_active, action_to_set


async def run_app(vault: Path, model: Path, iters: int, n_ctx: int) -> dict:
    from home.app import AppOptions, HomeApp
    from home.app.widgets.prompt_input import PromptInput

    app = HomeApp(AppOptions(vault=vault, model=model, user="me", n_ctx=n_ctx))
    t0 = time.perf_counter()
    interactive = 0.0
    out: dict = {}
    async with app.run_test(size=(100, 30)) as pilot:
        while not interactive:
            if app.chat is not None and app.chat.query_one(PromptInput).has_focus:
                interactive = time.perf_counter() - t0
            await asyncio.sleep(0.001)
        while not (app.session.ready and app.chat.stack_applied is not None):
            await asyncio.sleep(0.001)
        out["interactive"], out["loaded"] = interactive, time.perf_counter() - t0
        marks = instrument(app)
        chat, session = app.chat, app.session
        current, cached = chat.switch_persona, session.manifest
        chat.switch_persona = lambda pid: legacy_switch(chat, pid)
        session.manifest = session.ctx.manifest  # no cache: one parse per read, as before
        out["before"] = await switches(pilot, app, marks, iters)
        chat.switch_persona, session.manifest = current, cached
        out["after"] = await switches(pilot, app, marks, iters)
        harness = []  # what Pilot.press itself costs: a key nothing is bound to
        for _ in range(iters):
            start = time.perf_counter()
            await pilot.press("f12")
            harness.append(time.perf_counter() - start)
        out["harness"] = harness
        engine = app.session.engine
        raw = []
        for i in range(iters):
            stack = [("a0", 1.0)] if i % 2 == 0 else [("a1", 1.0)]
            start = time.perf_counter()
            engine.set_adapters(stack)
            raw.append(time.perf_counter() - start)
        out["raw"] = raw
    app.close_engine()
    return out


def main() -> None:
    args = c.parser(__doc__.splitlines()[0], iters=50).parse_args()
    model = c.model_path(args.model)
    root = Path(tempfile.mkdtemp(prefix="home-bench-"))
    try:
        make_vault(root / "v", model)
        r = asyncio.run(run_app(root / "v", model, args.iters, args.n_ctx))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ms = lambda xs, q: c.pct(xs, q) * 1000  # noqa: E731
    (key_b, act_b), (key_a, act_a) = r["before"], r["after"]
    print(f"persona switch over {args.iters} key presses each (n_ctx {args.n_ctx}):")
    print(f"  {'':30} {'before p50':>11} {'p99':>8} {'after p50':>11} {'p99':>8}")
    print(f"  {'app: action → stack set':30} {ms(act_b, 50):11.2f} {ms(act_b, 99):8.2f} "
          f"{ms(act_a, 50):11.2f} {ms(act_a, 99):8.2f}   (Pilot excluded)")
    print(f"  {'pilot: key → stack active':30} {ms(key_b, 50):11.2f} {ms(key_b, 99):8.2f} "
          f"{ms(key_a, 50):11.2f} {ms(key_a, 99):8.2f}")
    print(f"  {'pilot.press, unbound key':30} {ms(r['harness'], 50):11.2f} {ms(r['harness'], 99):8.2f}"
          "   (harness cost)")
    print(f"  {'engine.set_adapters alone':30} {ms(r['raw'], 50):11.2f} {ms(r['raw'], 99):8.2f}")
    extra = ms(act_a, 99) - ms(r["raw"], 99)
    print(f"  app cost beyond the engine's switch, after, p99: {extra:.2f} ms "
          f"(goal ≤ 5 ms: {c.verdict(extra <= 5)})")
    print("startup:")
    print(f"  app start → prompt focused (interactive): {r['interactive'] * 1000:8.1f} ms")
    print(f"  app start → model loaded:                 {r['loaded'] * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
