"""Writers for every kind of awkward image file a real dataset folder holds."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _rgb(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) +
                     chunk(b"IEND", b""))


def write_good(folder: Path, seed: int) -> dict[str, str]:
    """Readable files, some of which need converting. Returns ``{file name: kind}``."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _rgb(seed)
    base.save(folder / "plain.png")
    base.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    base.convert("L").save(folder / "grey.png")
    base.convert("P", palette=Image.ADAPTIVE, colors=16).save(folder / "palette.png")
    Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)).save(folder / "deep16.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    _rgb(seed + 1, (5, 7)).save(folder / "tiny.png")
    _rgb(seed + 2, (3000, 2000)).save(folder / "huge.jpg", quality=70)
    return {"plain.png": "rgb", "cmyk.jpg": "cmyk", "grey.png": "grayscale", "palette.png": "palette",
            "deep16.png": "16-bit", "alpha.png": "rgba", "tiny.png": "tiny", "huge.jpg": "huge"}


def write_bad(folder: Path, seed: int) -> dict[str, str]:
    """Unreadable files with image extensions. Returns ``{file name: expected reason fragment}``."""
    folder.mkdir(parents=True, exist_ok=True)
    _rgb(seed).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("these are my notes, not a picture\n")
    _png_claiming(folder / "bomb.png", 30000, 30000)
    return {"truncated.jpg": "unreadable image", "empty.png": "not an image file",
            "notes.jpg": "not an image file", "bomb.png": "image too large"}
