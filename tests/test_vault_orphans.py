"""What kill -9 leaves in the vault mid-write, made on disk by really killing a process at that moment,
then found by `home doctor` and put right by the next registration or `home train`.

No training here: registration and folder swaps are driven directly (the trainer calls the same code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.cli_helpers import REPO, home_env, run_home
from tests.loras import make_random_lora
from vault.fsio import replacing_dir, temp_sibling
from vault.layout import Vault
from vault.manifest import ManifestStore
from vault.orphans import REGISTRATION, clean_leftovers, find_leftovers


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped): what a killed writer's temp names carry."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def killed(code: str, *args: str) -> None:
    """Run `code` in a fresh interpreter that dies by os._exit(137) where the code says: no finally blocks,
    no cleanup, as under kill -9 at that moment."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 137, proc.stderr[-2000:]


REGISTER_THEN_DIE = """
    import os, sys
    from pathlib import Path
    import vault.manifest
    from trainer.protocol.register import register_adapter
    from vault.layout import Vault

    def die(self):  # the manifest update is the next step after the folder is renamed into place
        os._exit(137)

    vault.manifest.ManifestStore.update = die
    register_adapter(Vault.open(sys.argv[1]), name="bo voice", gguf=Path(sys.argv[2]), peft_dir=None,
                     extra_files=[], base={"fingerprint": "f" * 64, "name": "SmolLM2"}, owner="bo", kind="voice",
                     tasks=[], tones=[], rank=8, alpha=8.0, dataset={}, metrics={}, training={},
                     verification={"passed": True}, set_voice=True)
"""


@pytest.fixture()
def lora(tmp_path, model_path) -> Path:
    return make_random_lora(model_path, tmp_path / "lora.gguf", n_layers=1)


def test_a_registration_killed_before_the_manifest_is_reported_then_adopted(tmp_path, lora):
    root = tmp_path / "v"
    killed(REGISTER_THEN_DIE, str(root), str(lora))
    vault = Vault.open(root)
    folder = vault.adapters_dir / "bo-voice-1"
    assert (folder / "adapter.gguf").is_file() and (folder / REGISTRATION).is_file()
    assert ManifestStore(vault).read().adapters == {}  # the kill came before the manifest write

    doctor = run_home(root, "doctor")
    assert "[info] leftovers" in doctor.stdout, doctor.stdout
    assert "adapters/bo-voice-1 (complete adapter missing from the manifest)" in doctor.stdout

    # The next registration adopts it (under the adapters lock) before choosing its own id.
    from trainer.protocol.register import register_adapter

    reg = register_adapter(vault, name="bo voice", gguf=lora, peft_dir=None, extra_files=[],
                           base={"fingerprint": "f" * 64, "name": "SmolLM2"}, owner="bo", kind="voice", tasks=[],
                           tones=[], rank=8, alpha=8.0, dataset={}, metrics={}, training={}, verification={})
    manifest = ManifestStore(vault).read()
    assert reg.id == "bo-voice-2" and set(manifest.adapters) == {"bo-voice-1", "bo-voice-2"}
    assert manifest.adapters["bo-voice-1"].verification == {"passed": True}
    assert manifest.users["bo"]["voice_adapter"] == "bo-voice-1"  # what the killed run was about to set
    assert not (folder / REGISTRATION).exists() and not (vault.adapters_dir / "bo-voice-2" / REGISTRATION).exists()
    assert find_leftovers(vault) == []
    assert "[ok  ] leftovers" in run_home(root, "doctor").stdout


def test_the_next_training_run_removes_orphans_and_dead_temps(tmp_path, lora):
    root = tmp_path / "v"
    vault = Vault.open(root)
    pid = dead_pid()
    half = vault.adapters_dir / "me-voice-3"  # `home adapters remove` killed mid-delete: no note, no entry
    half.mkdir(mode=0o700)
    (half / "metrics.json").write_text("{}")
    torn = vault.adapters_dir / "bo-voice-1"  # a note, but the GGUF is not the one it names: incomplete
    torn.mkdir(mode=0o700)
    (torn / "adapter.gguf").write_bytes(lora.read_bytes()[:100])
    (torn / REGISTRATION).write_text(json.dumps({"entry": {"id": "bo-voice-1", "name": "x", "sha256": "0" * 64,
                                                           "file": "adapters/bo-voice-1/adapter.gguf"}}))
    run = vault.runs_dir / "bo-voice-20261130-000000-1"
    run.mkdir(mode=0o700)
    (run / f".settings.json.tmp-{pid}-7").write_text('{"sett')
    best_tmp = run / f".best.tmp-{pid}-8"
    best_tmp.mkdir(mode=0o700)
    live = run / f".peft.tmp-{os.getpid()}-9"  # a live writer's temp: not ours to touch
    live.mkdir(mode=0o700)
    live_adapter = vault.adapters_dir / f".tmp-voice-1.tmp-{os.getpid()}-3"  # adapter 'tmp-voice-1' in flight
    live_adapter.mkdir(mode=0o700)
    legacy = vault.adapters_dir / ".tmp-old-voice-1"  # the trainer's temp before temps carried a pid
    legacy.mkdir(mode=0o700)

    kinds = {lo.path.name: lo.kind for lo in find_leftovers(vault)}
    assert kinds == {"me-voice-3": "orphan", "bo-voice-1": "orphan", f".settings.json.tmp-{pid}-7": "temp",
                     f".best.tmp-{pid}-8": "temp", ".tmp-old-voice-1": "temp"}

    data = tmp_path / "two.jsonl"  # too few examples: the run fails at the dataset, after the sweep
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(2)))
    proc = run_home(root, "train", "--source", "jsonl", str(data), "--device", "cpu", "--json", timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    started = next(json.loads(ln) for ln in proc.stdout.splitlines() if '"started"' in ln)
    assert len(started["recovered"]) == 5, started["recovered"]
    assert not half.exists() and not torn.exists() and not legacy.exists() and not best_tmp.exists()
    assert live.is_dir() and live_adapter.is_dir()  # still there
    assert find_leftovers(vault) == []


def test_a_broken_manifest_makes_no_folder_an_orphan(tmp_path, lora):
    vault = Vault.open(tmp_path / "v")
    keep = vault.adapters_dir / "me-voice-1"
    keep.mkdir(mode=0o700)
    vault.manifest_path.write_text("{not json")
    assert find_leftovers(vault) == []
    assert clean_leftovers(vault) == [] and keep.is_dir()


OLD, NEW = b"old adapter weights " * 64, b"new adapter weights " * 64


def test_a_folder_replaced_whole_or_not_at_all(tmp_path):
    """best/ and peft/ are saved through `replacing_dir`: a failure mid-save leaves the old folder as it
    was (saving in place left it half new), and the new one arrives private even under a loose umask."""
    best = tmp_path / "best"
    best.mkdir()
    (best / "adapter_model.safetensors").write_bytes(OLD)
    with pytest.raises(OSError, match="No space"):
        with replacing_dir(best) as tmp:
            (tmp / "adapter_model.safetensors").write_bytes(NEW[:100])
            raise OSError(28, "No space left on device")
    assert (best / "adapter_model.safetensors").read_bytes() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["best"]

    old_umask = os.umask(0o022)
    try:
        with replacing_dir(best) as tmp:
            (tmp / "adapter_model.safetensors").write_bytes(NEW)
            (tmp / "sub").mkdir()
            (tmp / "sub" / "x.json").write_text("{}")
    finally:
        os.umask(old_umask)
    assert (best / "adapter_model.safetensors").read_bytes() == NEW
    modes = {p.relative_to(best).as_posix(): oct(p.stat().st_mode & 0o777) for p in [best, *best.rglob("*")]}
    assert modes == {".": "0o700", "adapter_model.safetensors": "0o600", "sub": "0o700", "sub/x.json": "0o600"}
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


SWAP_THEN_DIE = """
    import os, sys
    import vault.fsio as fsio

    fsio._exchange = lambda a, b: False  # the portable path: the old folder is moved aside first
    real_rename = os.rename

    def rename(src, dst):
        real_rename(src, dst)
        if ".old-" in str(dst):
            os._exit(137)  # killed between moving the old folder aside and moving the new one in

    fsio.os.rename = rename
    with fsio.replacing_dir(sys.argv[1]) as tmp:
        (tmp / "adapter_model.safetensors").write_bytes(b"new")
"""


def test_a_swap_killed_halfway_gets_the_last_complete_folder_back(tmp_path):
    root = tmp_path / "v"
    vault = Vault.open(root)
    best = vault.runs_dir / "run-1" / "best"
    best.mkdir(parents=True, mode=0o700)
    (best / "adapter_model.safetensors").write_bytes(OLD)
    killed(SWAP_THEN_DIE, str(best))
    assert not best.exists()
    assert {lo.kind for lo in find_leftovers(vault)} == {"swapped", "temp"}  # the old copy, the new temp
    done = clean_leftovers(vault)
    assert any(line.startswith("restored runs/run-1/best") for line in done), done
    assert (best / "adapter_model.safetensors").read_bytes() == OLD
    assert sorted(p.name for p in best.parent.iterdir()) == ["best"]


def test_temp_names_carry_their_writer(tmp_path):
    from vault.fsio import temp_owner

    assert temp_owner(temp_sibling(tmp_path / "settings.json").name) == os.getpid()
    assert temp_owner(".adapter.gguf.tmp-4242") == 4242  # the GGUF writer's own temp name
    assert temp_owner("settings.json") is None and temp_owner(".hidden") is None


def waits_on(pid: int, timeout: float = 60.0) -> bool:
    """Whether process `pid` is seen waiting for a lock (Linux /proc) before it exits or `timeout` passes:
    asleep in a lock's poll (`hrtimer_nanosleep`) three samples in a row. A command starting up imports
    and reads files but never sleeps; vault.fsio.FileLock (filelock) polls with a sleep and holds no
    descriptor of the lock file while it waits."""
    deadline = time.monotonic() + timeout
    asleep = 0
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/wchan") as fh:
                asleep = asleep + 1 if fh.read() == "hrtimer_nanosleep" else 0
        except OSError:
            return False
        if asleep >= 3:
            return True
        time.sleep(0.02)
    return False


def test_adapters_add_holds_the_adapters_lock(tmp_path, lora):
    """A sweep at a trainer's start must not remove the folder of an `adapters add` still in flight."""
    root = tmp_path / "v"
    vault = Vault.open(root)
    from vault.orphans import adapters_lock

    lock = adapters_lock(vault)
    lock.acquire()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "home.cli", "adapters", "add", str(lora), "--name", "x"],
                                cwd=REPO, env=home_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert waits_on(proc.pid), proc.communicate()
        time.sleep(0.5)
        assert proc.poll() is None and not (vault.adapters_dir / "x").exists()  # nothing written yet
    finally:
        lock.release()
    assert proc.wait(60) == 0, proc.stderr.read()
    assert "x" in ManifestStore(vault).read().adapters and find_leftovers(vault) == []
