"""Every GPU claim of Home in one run and one table (issue 11): trainer throughput against plain HF+peft,
8B QLoRA memory, a real `home train --4bit`, chat decode with full offload, a long chat's cached prefix kept
across distillations aside (bench/long_session.py), and the 8B retrain loop.

Run through bench/gpu_check.sh, which installs the carried wheels and builds llama.cpp with CUDA first;
`--cpu-smoke` runs every row at tiny shapes on the CPU (the same code paths, goals not judged) so CI
keeps this script from rotting. Each row is measured by the real tools in subprocesses: the throughput
rows by bench/trainer_throughput.py, the `home train` rows by the CLI itself (its JSON events: each
phase event carries the stage's seconds and peak memory), decode by bench/decode_speed.py. A row that
fails says why in the table and the run goes on; a deadline keeps the whole run inside its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_report import environment, kill_tree, last_line, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
GIB = 2**30
GPU = {  # the settings
    "tput": [("trainer tok/s, 1B 8x1024", "llama-1b", 8, 1024, 512), ("trainer tok/s, 8B 4x1024", "llama-8b", 4, 1024, 256)],
    "qlora": ("llama-8b", 4, 1024, 128, 24), "e2e": dict(shape="small", turns=300, train=["--steps", "40", "--batch-size", "8",
                                                                                          "--max-length", "256", "--lr", "2e-3"]),
    "decode": ["--gpu-layers", "-1", "--iters", "3", "--tokens", "128"],
    "retrain": dict(shape="llama-8b", turns=1000, train=["--epochs", "1", "--lr", "1e-3"]),
    "long": ["--n-ctx", "4096", "--pairs", "600", "--turns", "4", "--iters", "1", "--backlog", "4"],
}
CPU = {  # the same rows at tiny shapes: seconds each on 2 cores
    "tput": [("trainer tok/s, 1B 8x1024", "tiny", 8, 128, 16), ("trainer tok/s, 8B 4x1024", "tiny", 4, 128, 8)],
    "qlora": ("tiny", 4, 128, 8, 0), "e2e": dict(shape="tiny", turns=40, train=["--steps", "2", "--batch-size", "2",
                                                                               "--max-length", "96", "--lr", "1e-2"]),
    "decode": ["--gpu-layers", "0", "--iters", "1", "--tokens", "16"],
    "retrain": dict(shape="tiny", turns=1000, train=["--steps", "2", "--batch-size", "4", "--max-length", "96",
                                                        "--lr", "1e-2"]),
    "long": ["--n-ctx", "1024", "--pairs", "40", "--turns", "3", "--iters", "1", "--backlog", "2"],
}


class Run:
    """Shared state of one check: settings, work folder, log, deadline, rows."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.smoke = args, args.cpu_smoke
        self.cfg = CPU if self.smoke else GPU
        self.device = "cpu" if self.smoke else "cuda"
        self.work = Path(args.work or tempfile.mkdtemp(prefix="home-gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.deadline
        self.rows: list[dict] = []
        self.log = open(self.work / "gpu_check.log", "a")  # noqa: SIM115 - one log for the whole run
        self.env = {**os.environ, "HOME_CACHE": str(self.work / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(
                        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.jobs: dict[str, tuple[subprocess.Popen, Path]] = {}  # name: (process, its output file)
        self.llama = "llama-cpp-python: " + ("this venv's" if self.smoke else "?")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sh(self, cmd: list[str], timeout: float, name: str) -> subprocess.CompletedProcess:
        """A subprocess with the run's env, its output kept in the log, bounded by the deadline."""
        limit = max(5.0, min(timeout, self.left()))
        self.log.write(f"\n### {name}: {' '.join(cmd)}\n")
        self.log.flush()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as exc:
            self.log.write(f"{exc.stdout or ''}\n{exc.stderr or ''}\n")
            raise RuntimeError(f"timed out after {limit:.0f} s") from None
        self.log.write(proc.stdout[-20000:] + "\n" + proc.stderr[-20000:] + "\n")
        self.log.flush()
        return proc

    def start(self, name: str, cmd: list[str]) -> None:
        """A background job (model building): niced, so it takes the CPU the measurements leave."""
        path = self.work / f"{name}.out"
        with open(path, "w") as out:
            proc = subprocess.Popen(["nice", "-n", "10", *cmd], cwd=REPO, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, text=True)
        self.jobs[name] = (proc, path)

    def wait(self, name: str) -> dict:
        """The JSON last line of a background job, waiting for it within the deadline."""
        job, path = self.jobs[name]
        try:
            code = job.wait(timeout=max(1.0, self.left()))
        except subprocess.TimeoutExpired:
            job.kill()
            raise RuntimeError(f"{name}: not ready before the deadline") from None
        text = path.read_text()
        self.log.write(f"\n### {name} (background)\n{text[-5000:]}\n")
        if code != 0:
            raise RuntimeError(f"{name}: {last_line(text)}")
        return json.loads(text.strip().splitlines()[-1])

    def row(self, check: str, fn, *a) -> None:
        """Run one row; a failure or the deadline becomes the row's text, never the end of the run."""
        t = time.monotonic()
        if self.left() < 5:
            res = {"home": "skipped: deadline", "error": "deadline"}
        else:
            try:
                res = fn(self, *a)
            except Exception as exc:  # noqa: BLE001 - one row's failure is that row's result
                res = {"home": f"FAILED: {str(exc)[:160]}", "error": str(exc)}
        res.update(check=check, seconds=round(time.monotonic() - t, 1))
        self.rows.append(res)
        print(f"  {check}: {res.get('home')} ({res['seconds']} s)", file=sys.stderr, flush=True)


def judged(run: Run, ok: bool) -> str:
    return "ran" if run.smoke else ("PASS" if ok else "FAIL")


def throughput(run: Run, shape: str, batch: int, max_len: int, examples: int) -> dict:
    proc = run.sh([sys.executable, str(BENCH / "trainer_throughput.py"), "--device", run.device, "--shape", shape,
                   "--batch", str(batch), "--max-len", str(max_len), "--examples", str(examples), "--json"],
                  400, f"throughput {shape}")
    if proc.returncode != 0 and not proc.stdout.strip():
        raise RuntimeError(last_line(proc.stderr))
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    home, base = res["rows"]["home"], res["rows"]["baseline"]
    if "error" in home or "error" in base:
        raise RuntimeError(home.get("error") or base.get("error"))
    ratio = res["ratio"]
    return {"home": f"{home['real_tok_s']:,.0f} real tok/s", "ref": f"{base['real_tok_s']:,.0f} (HF+peft)",
            "ratio": f"{ratio:.2f}x", "goal": ">= 2.0x", "result": judged(run, ratio >= 2.0),
            "detail": f"{shape}{' +liger' if home['liger'] else ''}; padding {home['padding']:.0%} vs "
                      f"{base['padding']:.0%}; peak {home['peak_gib']:.1f} vs {base['peak_gib']:.1f} GiB; {home['plan']}"}


def qlora(run: Run, shape: str, batch: int, max_len: int, examples: int, gib: int) -> dict:
    common = [sys.executable, str(BENCH / "trainer_throughput.py"), "--device", run.device, "--shape", shape,
              "--batch", str(batch), "--max-len", str(max_len), "--examples", str(examples), "--qlora", "--json"]
    home = run.sh([*common, "--only", "home", *(["--gpu-gib", str(gib)] if gib else [])], 300, "qlora home")
    # The plain QLoRA baseline is the measured 48.8 GiB; it is run beside Home's on the GPU only.
    base = run.sh([*common, "--only", "baseline"], 300, "qlora baseline") if not run.smoke and run.left() > 60 else None
    h = json.loads(home.stdout.strip().splitlines()[-1])["rows"]["home"] if home.stdout.strip() else {}
    if "error" in h or not h:
        raise RuntimeError(h.get("error") or last_line(home.stderr))
    b = json.loads(base.stdout.strip().splitlines()[-1])["rows"]["baseline"] if base and base.stdout.strip() else {}
    ref = f"{b['peak_gib']:.1f} GiB (HF+peft)" if "peak_gib" in b else "48.8 GiB (HF+peft, measured)"
    where = f"as on a {gib} GiB card" if gib else "host RSS on the CPU"
    return {"home": f"{h['peak_gib']:.1f} GiB", "ref": ref, "ratio": f"{h['peak_gib'] / b['peak_gib']:.2f}x"
            if "peak_gib" in b else "", "goal": "<= 24 GiB", "result": judged(run, h["peak_gib"] <= 24),
            "detail": f"nf4 {shape}, {where}; {h['real_tok_s']:,.0f} real tok/s; {h['plan']}"}


def model_for(run: Run, key: str) -> tuple[Path, Path | None]:
    """(GGUF, transformers folder or None) for a row: --model/--base, a model built for it, or (CPU
    smoke without llama.cpp's converter) the default model."""
    if run.args.model and key == "e2e":
        return Path(run.args.model), Path(run.args.base) if run.args.base else None
    if key in run.jobs:
        built = run.wait(key)
        return Path(built["gguf"]), Path(built["hf"]) if built.get("hf") else None
    from llm.models import default_model_path

    return default_model_path(), None


def train(run: Run, vault: Path, gguf: Path, extra: list[str], timeout: float, name: str) -> tuple[list, float]:
    """`home train` on the vault's logs; its events (each stamped with seconds since start) and wall time."""
    cmd = [sys.executable, "-m", "home.cli", "--vault", str(vault), "--model", str(gguf), "--user", "bo", "train",
           "--device", run.device, "--json", *extra]
    run.log.write(f"\n### {name}: {' '.join(cmd)}\n")
    t = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=run.env, stdout=subprocess.PIPE, stderr=run.log, text=True)
    limit = max(5.0, min(timeout, run.left()))
    watchdog = threading.Timer(limit, kill_tree, (proc.pid,))  # a silent hang ends too, not only a slow stream
    watchdog.start()
    events = []
    try:
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            ev["_t"] = round(time.monotonic() - t, 1)
            events.append(ev)
            run.log.write(line)
    finally:
        watchdog.cancel()
    if time.monotonic() - t >= limit:
        last = events[-1] if events else {}
        raise RuntimeError(f"timed out after {limit:.0f} s at {last.get('event')} {last.get('name', '')}")
    code = proc.wait()
    if code != 0:
        err = next((e for e in reversed(events) if e.get("event") == "error"), {})
        raise RuntimeError(f"home train exited {code}: {err.get('message', 'see the log')}")
    return events, time.monotonic() - t


def e2e(run: Run) -> dict:
    spec = run.cfg["e2e"]
    vault = run.work / "vault-e2e"
    run.sh([sys.executable, str(BENCH / "gpu_models.py"), "logs", "--vault", str(vault), "--turns",
            str(spec["turns"])], 120, "e2e logs")
    gguf, hf = model_for(run, "e2e")
    # The user's path first: --4bit from the GGUF alone. A trainer that still wants the transformers
    # folder says "--base"; the CPU smoke falls back to fp32 where bitsandbytes' CPU backend is refused.
    flags, note = ["--4bit"], ""
    try:
        events, _ = train(run, vault, gguf, [*spec["train"], *flags], 300, "e2e home train --4bit")
    except RuntimeError as exc:
        if "--base" in str(exc) and hf is not None:
            flags, note = ["--4bit", "--base", str(hf)], "; needed --base"
        elif run.smoke and "--4bit" in str(exc):  # refused up front (exit 3), not a failure midway
            flags, note = [], f"; --4bit refused here: {str(exc)[:120]}"
        else:
            raise
        events, _ = train(run, vault, gguf, [*spec["train"], *flags], 300, "e2e home train, again")
    four = "--4bit" in flags
    ver = next(e for e in events if e["event"] == "verified")
    reg = next(e for e in events if e["event"] == "registered")
    entry = json.loads((vault / "manifest.json").read_text())["adapters"][reg["id"]]
    asked = run.sh([sys.executable, "-m", "home.cli", "--vault", str(vault), "--model", str(gguf), "--user", "bo",
                    "ask", "Any news?", "--adapter", reg["id"], "--max-tokens", "8", "--no-memory", "--json"], 180,
                   "e2e home ask")
    used = asked.returncode == 0 and json.loads(asked.stdout)["adapters"] == [{"id": reg["id"], "scale": 1.0}]
    device = entry["training"]["device"]
    ok = ver["passed"] and used and (bool(four) == ("nf4" in device))
    how = "home train --4bit" if four else "home train (fp32)"
    return {"home": f"{how}: {'verified' if ver['passed'] else 'NOT verified'}, registered {reg['id']}, "
                    f"ask {'used it' if used else 'FAILED: ' + last_line(asked.stderr)}",
            "ref": f"corr {ver['correlation']:.4f}, top-1 {ver['top1_agreement']:.3f}", "goal": "all three",
            "result": "PASS" if ok else "FAIL", "detail": f"{gguf.name} on {device}{note}"}


def decode(run: Run) -> dict:
    gguf = Path(run.args.model) if run.args.model else model_for(run, "retrain" if "retrain" in run.jobs else "e2e")[0]
    proc = run.sh([sys.executable, str(BENCH / "decode_speed.py"), "--model", str(gguf), *run.cfg["decode"]], 300,
                  "decode")
    out = proc.stdout

    def grab(pat: str) -> str:
        m = re.search(pat, out)
        if not m:
            # exit code too: an H200 run's decode died with no output at all (a signal, not an error line)
            raise RuntimeError(f"exit {proc.returncode}: {last_line(proc.stderr)}" if proc.returncode
                               else f"no {pat!r} in its output")
        return m.group(1)

    bare, eng, ratio = float(grab(r"Llama\.generate:\s+([\d.]+)")), float(grab(r"Engine\.stream:\s+([\d.]+)")), \
        float(grab(r"ratio Engine / bare \(median of pairs\) = ([\d.]+)"))
    offload = grab(r"offload \(both sides\): (.*)")
    return {"home": f"{eng:.1f} tok/s", "ref": f"{bare:.1f} (bare llama-cpp-python)", "ratio": f"{ratio:.2f}x",
            "goal": ">= 0.95x", "result": judged(run, ratio >= 0.95), "detail": f"{gguf.name}; offload {offload}"}


def long_session(run: Run) -> dict:
    """The chat's cached prefix kept across calls aside (llm/kv_aside.py) where the KV lives on the GPU: the
    tokens the turn after a distillation reads, aside against not, and a backlog's copies, lazy against eager."""
    gguf = Path(run.args.model) if run.args.model else model_for(run, "retrain" if "retrain" in run.jobs else "e2e")[0]
    proc = run.sh([sys.executable, str(BENCH / "long_session.py"), "--model", str(gguf), *run.cfg["long"]], 300,
                  "long session")
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {last_line(proc.stderr)}")
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    read, ttft = rep["mean_tokens_read"], rep["median_ttft_s"]
    eager, lazy = rep["backlog"]["cut holds, eager (before)"], rep["backlog"]["cut holds, lazy (Home)"]
    both = lambda m: m["backlog_s"] + m["next_ttft_s"]  # noqa: E731
    ok = rep["aside_ratio_read"] >= 2 and lazy["saves"] == 1 and both(lazy) <= both(eager) * 1.1
    return {"home": f"aside: {read['grid, distil aside (Home)']:.0f} tok read, TTFT {ttft['grid, distil aside (Home)']:.2f} s",
            "ref": f"not aside: {read['grid, distil not aside']:.0f} tok, {ttft['grid, distil not aside']:.2f} s",
            "ratio": f"{rep['aside_ratio_ttft']:.1f}x", "goal": "read >= 2x fewer; lazy backlog <= eager",
            "result": judged(run, ok), "detail": f"{gguf.name}; backlog of {run.cfg['long'][-1]} + next first token: "
            f"lazy {both(lazy):.2f} s ({lazy['bytes'] / 2**20:.0f} MiB copied) vs eager {both(eager):.2f} s "
            f"({eager['bytes'] / 2**20:.0f} MiB); grid vs one exchange a turn: {rep['ratio_read']:.1f}x fewer tokens"}


def retrain(run: Run) -> dict:
    spec = run.cfg["retrain"]
    vault = run.work / "vault-retrain"
    run.sh([sys.executable, str(BENCH / "gpu_models.py"), "logs", "--vault", str(vault), "--turns",
            str(spec["turns"])], 120, "retrain logs")
    gguf, _ = model_for(run, "retrain")
    events, wall = train(run, vault, gguf, spec["train"], 600, "retrain home train")
    at = {e.get("name") if e["event"] == "phase" else e["event"]: e["_t"] for e in events}
    stages = [e["memory"] for e in events if e.get("memory")]
    step = [e for e in events if e["event"] == "step"]
    parts = ", ".join(f"{s['stage']} {s['seconds']:.0f}s" + (f"/{s['peak_gpu_bytes'] / GIB:.1f}G"
                      if s.get("peak_gpu_bytes") else "") for s in stages)
    tps = step[-1].get("tokens_per_s") if step else None
    return {"home": f"{wall:.0f} s start->registered", "ref": f"trained {at.get('convert', 0):.0f}, converted "
            f"{at.get('converted', 0):.0f}, verified {at.get('verified', 0):.0f}, registered "
            f"{at.get('registered', 0):.0f} s", "goal": "<= 180 s", "result": judged(run, wall <= 180),
            "detail": f"{gguf.name}, {spec['turns']} turns, {len(step) and step[-1].get('total')} steps"
                      f"{f', {tps:,.0f} real tok/s' if tps else ''}; stage s/peak GPU: {parts}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="every row at tiny shapes on the CPU")
    ap.add_argument("--model", help="a GGUF for the `home train --4bit` and decode rows (else one is built)")
    ap.add_argument("--base", help="its transformers folder (Home's --4bit needs one); with --model")
    ap.add_argument("--only", help="comma-separated rows: tput,qlora,e2e,decode,long,retrain")
    ap.add_argument("--work", help="work folder (models, vaults, log); kept, reused when the models are there")
    ap.add_argument("--deadline", type=float, default=470.0, help="seconds for the whole run (default 470)")
    ap.add_argument("--llama-src", help="llama.cpp source with convert_hf_to_gguf.py (default: from .gpu/)")
    args = ap.parse_args()
    run = Run(args)
    only = set((args.only or "tput,qlora,e2e,decode,long,retrain").split(","))
    sys.path.insert(0, str(BENCH))
    from gpu_models import llama_src

    src = llama_src(run.work, args.llama_src)
    wanted = {"e2e": "e2e" in only and not args.model,  # models first, in the background, while the
              "retrain": "retrain" in only or (bool(only & {"decode", "long"}) and not args.model)}  # throughput rows measure
    for key in (k for k, want in wanted.items() if want and src is not None):
        shape = run.cfg[key]["shape"]
        gguf, hf = run.work / f"{shape}.gguf", run.work / f"{shape}-hf"
        keep = ["--keep-hf"] if key == "e2e" else []
        if key == "retrain" and run.cfg["e2e"]["shape"] == shape and "e2e" in run.jobs:
            run.jobs[key] = run.jobs["e2e"]  # the CPU smoke: one tiny model serves every row
            continue
        if gguf.is_file() and (not keep or hf.is_dir()):  # built by an earlier call on this machine
            run.start(key, [sys.executable, "-c", "import json, sys; print(json.dumps({'gguf': sys.argv[1], "
                            "'hf': sys.argv[2] or None}))", str(gguf), str(hf) if keep else ""])
            continue
        on = "cuda" if key == "retrain" and not run.smoke else "cpu"  # an 8B fills in ms there, minutes here
        run.start(key, [sys.executable, str(BENCH / "gpu_models.py"), "model", "--shape", shape, "--out", str(hf),
                        "--gguf", str(gguf), "--work", str(run.work), "--llama-src", str(src), "--device", on, *keep])
    print(f"gpu_check: {'CPU smoke' if run.smoke else 'GPU'} run, work in {run.work}", file=sys.stderr)
    if "tput" in only:
        for check, *spec in run.cfg["tput"]:
            run.row(check, throughput, *spec)
    if "qlora" in only:
        run.row("8B QLoRA peak GPU memory" + (" (tiny, CPU)" if run.smoke else ""), qlora, *run.cfg["qlora"])
    if only & {"e2e", "decode", "long", "retrain"}:
        wait_llama(run)
    if "e2e" in only:
        run.row("home train --4bit, small model", e2e)
    if "decode" in only:
        run.row("chat decode, all layers offloaded" if not run.smoke else "chat decode (CPU, 0 layers)", decode)
    if "long" in only:
        run.row("long chat, distillations aside" + (" (CPU)" if run.smoke else ", KV on the GPU"), long_session)
    if "retrain" in only:
        run.row(f"retrain loop, {'8B' if not run.smoke else 'CPU'}, {run.cfg['retrain']['turns']} turns", retrain)
    for job, _ in run.jobs.values():
        if job.poll() is None:
            job.kill()
    took = time.monotonic() - run.t0
    text = (f"Home GPU check ({'CPU smoke: tiny shapes, goals not judged' if run.smoke else 'GPU'}) in {took:.0f} s; "
            f"{environment()}; {run.llama}\n{table(run)}\n")
    print(text)
    for folder in filter(None, [os.environ.get("OUT")]):  # the device tool brings $OUT back
        Path(folder, "gpu_check.txt").write_text(text)
        Path(folder, "gpu_check.json").write_text(json.dumps(run.rows, indent=1))
        run.log.flush()
        Path(folder, "gpu_check.log").write_text((run.work / "gpu_check.log").read_text()[-8_000_000:])
    run.log.flush()
    failed = any("error" in r for r in run.rows)
    if failed:  # the log's end says why; the table has one line per row
        print((run.work / "gpu_check.log").read_text()[-4000:], file=sys.stderr)
    if args.work is None:  # a temporary folder of ours (CPU smoke): models, vaults, log
        shutil.rmtree(run.work, ignore_errors=True)
    if failed:
        return 1
    return 0 if run.smoke or all(r.get("result") != "FAIL" for r in run.rows) else 3


def wait_llama(run: Run) -> None:
    """Block until gpu_check.sh's background llama.cpp build has finished (no-op when none runs)."""
    status = os.environ.get("HOME_GPU_LLAMA_STATUS")
    while status and not Path(status).is_file() and run.left() > 5:
        time.sleep(2)
    if status:
        said = Path(status).read_text().strip() if Path(status).is_file() else "not ready before the deadline"
        run.llama = f"llama.cpp CUDA build: {said}"
        print(f"gpu_check: {run.llama}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
