"""Home as a user of three years meets it: each command and app step timed on an old vault
(bench/old_vault.py), with the real default model where the step loads one.

Why: what reads every log, lists every session or loads every adapter version gets slower every day the
user keeps Home, and no test on a fresh vault sees it. `--before REV` runs the same steps on the code of
commit REV (exported with `git archive` to a temp folder, put first on PYTHONPATH) in the same run, so
the two columns share the machine's load; each CLI step is the median of `--iters` runs with the files in
the page cache. The app steps run in a child process per code tree (Textual Pilot, headless): start to
the first usable prompt (model loaded, stack applied), then until the adapters are synced (the turn
lock free: a first message waits for it), the first reply sent at that moment, the resume list, the
retrain panel's check, an export; with the process's peak RSS.

    flock /tmp/home-heavy.lock .venv/bin/python bench/old_vault_times.py /tmp/oldvault --before HEAD~1

Measured 2026-12-01 on the shared 2-core box (`bench/old_vault.py` defaults: 7000 sessions, 112k turns,
156 voice + 12 persona versions, 400 gestalts; `--before 7b38930 --after 6b36fe3`): the first reply sent
at the prompt 9.3 s -> 2.1 s (the turn waited for all 168 adapters to load; 2 now), peak RSS 4.1 GB ->
0.96 GB, the router decision a turn logs 23.7 kB -> 1.4 kB; doctor 0.43 s, adapters list 0.17 s, memory
search 1.7 s, train --check 1.6 s (it reads every log, as training does), drift --usage-only 0.86 s,
the resume list 0.05-0.12 s, the retrain check 0.05 s, app start to the prompt 0.33 s, all unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
       "OMP_WAIT_POLICY": "PASSIVE"}
RUN_HOME = "import sys; from home.cli import main; sys.exit(main())"
CLI = {
    "home doctor": ["doctor"],
    "home adapters list": ["adapters", "list"],
    "home memory search": ["memory", "search", "where does my sister live"],
    "home gestalts list": ["gestalts", "list"],
    "home train --check": ["train", "--check"],
    "home drift --usage-only": ["drift", "--usage-only"],
    "home route": ["route", "help me word a note to my landlord"],
}


def _cli(tree: Path, vault: Path, args: list[str], iters: int) -> tuple[float, int]:
    """Median wall seconds of `home ARGS` on `vault` with the code of `tree`, and its last exit status."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(tree), "HOME_VAULT": str(vault)}
    times, rc = [], 0
    for _ in range(iters):
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-c", RUN_HOME, "--user", "me", *args], env=env, cwd=tree, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rc


async def _app_steps(vault: Path) -> dict:
    """(In the child.) The app from start to a first reply, and the palette steps that read the vault."""
    from home.app import AppOptions, HomeApp
    from home.app.commands import session_line
    from home.app.retrain import build_job, logs_refusal
    from home.app.widgets.prompt_input import PromptInput

    out: dict[str, float] = {}
    app = HomeApp(AppOptions(vault=vault, user="me", max_tokens=8, n_ctx=2048, temperature=0.0, seed=1))
    t0 = time.perf_counter()
    async with app.run_test(headless=True, size=(100, 30)) as pilot:
        async def until(cond, timeout: float = 300.0) -> float:  # noqa: ANN001
            for _ in range(int(timeout / 0.01)):
                if cond():
                    return time.perf_counter() - t0
                await pilot.pause(0.01)
            raise SystemExit(f"old_vault_times: timed out waiting for {cond}")

        out["app: start → prompt usable"] = await until(
            lambda: app.session and app.session.ready and app.chat and app.chat.stack_applied is not None)
        sent = time.perf_counter()
        before = app.session.conversation.last
        app.chat.query_one(PromptInput).insert("hi, what's on my list for today?")
        await pilot.press("enter")
        out["app: adapters synced"] = await until(lambda: app.watcher is not None)
        await until(lambda: app.session.conversation.last is not before and not app.chat.generating)
        out["app: first reply (sent at prompt)"] = time.perf_counter() - sent
        await until(lambda: app.session.recall is not None or app.session.memory_note)
        if app.session.recall is not None:
            await asyncio.to_thread(app.session.recall.wait_idle, 300)
        out["app: memory caught up"] = time.perf_counter() - t0
        out["app: adapters loaded (count)"] = len(app.session.engine.loaded_adapters)
        t = time.perf_counter()
        for info in app.session.recent_sessions():
            session_line(info.path, info.modified)
        out["app: resume list"] = time.perf_counter() - t
        t = time.perf_counter()
        logs_refusal(app.session, build_job(app.session, "sft"))
        out["app: retrain check"] = time.perf_counter() - t
        oldest = min(app.session.recent_sessions(10_000), key=lambda s: s.modified).id
        t = time.perf_counter()
        await app.chat.new_chat(oldest)
        app.session.export_markdown()
        out["app: resume + export oldest"] = time.perf_counter() - t
    out["app: peak RSS (MB)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _child(vault: Path) -> int:
    print(json.dumps(asyncio.run(_app_steps(vault))))
    return 0


def measure(tree: Path, vault: Path, iters: int) -> dict:
    env = {**os.environ, **ENV, "PYTHONPATH": str(tree)}
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(vault), "--child"], env=env,
                         cwd=tree, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"old_vault_times: app child failed in {tree}: {res.stderr.strip()[-600:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for label, args in CLI.items():
        secs, rc = _cli(tree, vault, args, iters)
        out[label + ("" if rc == 0 else f" (exit {rc})")] = secs
    route = subprocess.run([sys.executable, "-c", RUN_HOME, "--user", "me", *CLI["home route"], "--json"],
                           env={**env, "HOME_VAULT": str(vault)}, cwd=tree, capture_output=True)
    out["router decision a turn logs (bytes)"] = len(route.stdout)  # `route --json`: the record's "router"
    return out


def export_tree(rev: str) -> Path:
    """The code of commit `rev`, in a temp folder (`git archive`: the repository is not touched)."""
    dest = Path(tempfile.mkdtemp(prefix="old-vault-before-"))
    data = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=data, check=True)
    return dest


def vault_stats(vault: Path) -> dict:
    files = sum(len(f) for _, _, f in os.walk(vault))
    logs = list((vault / "logs").glob("*.jsonl"))
    manifest = json.loads((vault / "manifest.json").read_text())
    return {"files": files, "sessions": len(logs), "log MB": round(sum(p.stat().st_size for p in logs) / 1e6, 1),
            "adapters": len(manifest["adapters"]), "runs": len(list((vault / "runs").iterdir()))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("vault", type=Path)
    p.add_argument("--before", metavar="REV", help="also time the code of this commit, side by side")
    p.add_argument("--after", metavar="REV", help="the second column's commit (default: the working tree)")
    p.add_argument("--iters", type=int, default=3, help="runs per CLI step (median; default 3)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return _child(a.vault)
    print(json.dumps(vault_stats(a.vault)))
    cols = {}
    if a.before:
        cols[f"before ({a.before})"] = measure(export_tree(a.before), a.vault, a.iters)
    if a.after:
        cols[f"after ({a.after})"] = measure(export_tree(a.after), a.vault, a.iters)
    else:
        cols["now"] = measure(ROOT, a.vault, a.iters)
    names = list(dict.fromkeys(k for col in cols.values() for k in col))
    print(f"| step | {' | '.join(cols)} |" + (" ratio |" if a.before else ""))
    print("|---" * (len(cols) + 1 + bool(a.before)) + "|")
    for k in names:
        vals = [col.get(k) for col in cols.values()]
        cells = " | ".join("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals)
        ratio = ""
        if a.before and all(isinstance(v, (int, float)) and v for v in vals):
            ratio = f" {vals[0] / vals[1]:.1f}x |"
        print(f"| {k} | {cells} |" + (ratio or (" |" if a.before else "")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
