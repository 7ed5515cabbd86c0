"""Reading a character card's text from a PNG: Pillow's chunk stream (what vault/png_text.py uses) vs
Pillow's documented `Image.open(...).text`, which decodes every pixel to reach text stored after the
image data, where card editors put it. Also the file locks' cost: `filelock` (vault/fsio.FileLock) vs
`fcntl.flock` as Home did it before, per new lock acquired and released.

Cards are noisy RGBA images (PNG cannot shrink them much) with a 20 kB card appended before IEND.
Peak memory is each reader's own process (one subprocess per reader and size).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import _common as c

SIZES = ((512, 768), (1024, 1536), (2048, 3072))


def make_card(path: Path, w: int, h: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = (rng.random((h, w, 4)) * 40 + np.linspace(0, 200, w)[None, :, None]).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGBA").save(buf, "PNG")
    card = base64.b64encode(json.dumps({"name": "x", "description": "d" * 15000}).encode())
    body = b"chara\0" + card
    text = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    blob = buf.getvalue()
    path.write_bytes(blob[:-12] + text + blob[-12:])


def hwm_kb() -> int:
    """This process's peak RSS (VmHWM; ru_maxrss would start at the forking parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def read_once(reader: str, path: Path, iters: int) -> None:
    """(In a child) read the card once for the peak, then `iters` times; print seconds per read and
    the peak RSS it added in MB (imports done first, on a 1×1 PNG)."""
    from PIL import Image

    from vault.png_text import png_text_chunks

    def read(blob: bytes) -> str:
        if reader == "stream":
            return png_text_chunks(blob, str(path), ("chara",)).get("chara", "")
        with Image.open(io.BytesIO(blob)) as im:
            return im.text.get("chara", "")

    tiny = io.BytesIO()
    Image.new("RGB", (1, 1)).save(tiny, "PNG")
    read(tiny.getvalue())
    blob = path.read_bytes()
    base = hwm_kb()
    read(blob)
    peak = (hwm_kb() - base) / 1024
    t0 = time.perf_counter()
    for _ in range(iters):
        text = read(blob)
    assert text.startswith("eyJ")
    print(f"{(time.perf_counter() - t0) / iters} {peak}")


def lock_cost(iters: int) -> tuple[float, float]:
    from vault.fsio import FileLock, ensure_private_dir

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.lock"
        t0 = time.perf_counter()
        for _ in range(iters):  # what vault.fsio.FileLock did before filelock
            ensure_private_dir(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        bare = (time.perf_counter() - t0) / iters
        t0 = time.perf_counter()
        for _ in range(iters):
            with FileLock(path):
                pass
        ours = (time.perf_counter() - t0) / iters
    return bare, ours


def main() -> None:
    p = c.parser(__doc__.split("\n")[0], iters=5)
    args = p.parse_args()
    print(f"{'card':>11} {'MB':>5} | {'chunk stream':>14} {'Image.open().text':>19} {'ratio':>6} | peak MB stream / decode")
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in SIZES:
            path = Path(tmp) / f"{w}x{h}.png"
            make_card(path, w, h)
            got = {}
            for reader in ("stream", "decode"):
                code = (f"import sys; sys.path[:0] = [{str(c.ROOT)!r}, {str(c.ROOT / 'bench')!r}]\n"
                        f"from png_card_read import read_once; read_once({reader!r}, __import__('pathlib').Path({str(path)!r}), {args.iters})")
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                got[reader] = [float(x) for x in out.stdout.split()]
            (s, sm), (d, dm) = got["stream"], got["decode"]
            print(f"{w:>5}x{h:<5} {path.stat().st_size / 1e6:5.1f} | {s * 1e3:11.1f} ms {d * 1e3:16.1f} ms {d / s:5.0f}x |"
                  f" {sm:6.1f} / {dm:6.1f}")
    bare, ours = lock_cost(args.iters * 400)
    print(f"lock acquire+release, new lock each time: before (fcntl.flock) {bare * 1e6:.0f} us, "
          f"vault.fsio.FileLock (filelock) {ours * 1e6:.0f} us ({ours / bare:.1f}x)")


if __name__ == "__main__":
    main()
