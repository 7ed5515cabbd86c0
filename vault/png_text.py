"""Text chunks of a PNG (a character card's `chara`/`ccv3`), read with Pillow's chunk stream.

Why `PngStream` and not `Image.open(...).text`: cards put their text after the image data, and `.text`
reaches it only by decoding every pixel: 45 ms for a 512×768 card, 0.8 s and 24 MB for a 2048×3072 one,
where walking the chunks takes 0.3 and 26 ms and 0.2 MB (bench/png_card_read.py); a huge image is never
decoded. Pillow does the chunk walk, the CRC and the tEXt/zTXt/iTXt decoding (inflated text up to its
`MAX_TEXT_CHUNK`, 1 MiB per compressed chunk; it skips or empties text it cannot inflate or decode,
which we report); we add the places and words of the messages.
"""

from __future__ import annotations

import io
import struct

from .errors import PersonaError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def png_text_chunks(blob: bytes, src: str, keywords: tuple[str, ...]) -> dict[str, str]:
    """The text of the first chunk per keyword (matched case-insensitively) up to IEND; `PersonaError`
    naming `src` (and the chunk's byte) for a file that is not a PNG, truncated, or corrupt."""
    from PIL import PngImagePlugin

    if not blob.startswith(PNG_SIGNATURE):
        raise PersonaError(f"{src}: not a PNG file (bad signature)")
    fp = io.BytesIO(blob)
    fp.seek(len(PNG_SIGNATURE))
    stream = PngImagePlugin.PngStream(fp)
    found: dict[str, str] = {}
    while True:
        at = fp.tell()
        if at + 12 > len(blob):
            raise PersonaError(f"{src}: truncated PNG (ends at byte {len(blob)} before the IEND chunk)")
        try:
            ctype, pos, length = stream.read()
        except (SyntaxError, struct.error):
            raise PersonaError(f"{src}: corrupt PNG (no valid chunk type at byte {at})") from None
        if pos + length + 4 > len(blob):
            raise PersonaError(f"{src}: truncated PNG ({ctype.decode('latin-1')!r} chunk at byte {at} "
                               f"declares {length} bytes, {len(blob) - at - 12} remain)")
        if ctype == b"IEND":
            return found
        key = blob[pos:pos + length].partition(b"\0")[0].decode("latin-1")
        name = key.lower()
        if ctype not in TEXT_CHUNKS or name not in keywords or name in found:
            fp.seek(length + 4, io.SEEK_CUR)  # the data and its CRC: no other chunk matters here
            continue
        where = f"{ctype.decode()} chunk '{name}' at byte {at}"
        stream.im_text.pop(key, None)
        try:
            stream.crc(ctype, stream.call(ctype, pos, length))
        except SyntaxError as exc:
            why = "fails its CRC check" if "checksum" in str(exc) else str(exc)
            raise PersonaError(f"{src}: corrupt PNG ({where} {why})") from None
        except ValueError as exc:  # Pillow's inflate and text-memory limits
            raise PersonaError(f"{src}: {where}: too big ({exc})") from None
        text = stream.im_text.get(key)
        if text is None or (not text and ctype != b"tEXt"):  # Pillow skips (or empties) what it cannot read
            raise PersonaError(f"{src}: {where}: bad compressed data or text that is not UTF-8")
        found[name] = str(text)
