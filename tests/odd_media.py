"""Broken and odd media files, made on disk: each kind with what preresq must do with it.

`make_odd_media(folder)` -> {file name: "loads" | "refused"}. A refused file must become a MediaError (a
skipped, counted, named item in training; a row with its error in evaluate and score), never a crash.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from test_video import audio_only_mp4, zero_frame_avi

from qadata.video_files import write_video


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (its data is one row): PIL sees the size before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 220, width)[None, :, None] + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def make_odd_media(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}

    def add(name: str, expected: str) -> Path:
        kinds[name] = expected
        return folder / name

    # refused
    add("missing.png", "refused")  # listed, never written
    os.symlink(folder / "nowhere.png", add("dangling.png", "refused"))
    add("empty.png", "refused").write_bytes(b"")
    add("noise.jpg", "refused").write_bytes(np.random.default_rng(1).bytes(4096))
    add("text.png", "refused").write_text("not a picture\n")
    good_jpeg = io.BytesIO()
    _photo(96, 96).save(good_jpeg, "JPEG", quality=90)
    add("truncated.jpg", "refused").write_bytes(good_jpeg.getvalue()[: len(good_jpeg.getvalue()) // 2])
    good_png = io.BytesIO()
    _photo(96, 96).save(good_png, "PNG")
    add("truncated.png", "refused").write_bytes(good_png.getvalue()[: len(good_png.getvalue()) // 2])
    add("bomb.png", "refused").write_bytes(_png_declaring(20000, 20000))  # 400 Mpx declared
    _photo(1000, 2).save(add("sliver.png", "refused"))  # 500 : 1, over the processor's 200 : 1
    add("folder.png", "refused").mkdir()
    add("empty.mp4", "refused").write_bytes(b"")
    add("text.mp4", "refused").write_text("not a video\n")
    zero_frame_avi(add("zero-frames.avi", "refused"))
    audio_only_mp4(add("audio-only.mp4", "refused"))
    # loaded
    add("png-named.jpg", "loads").write_bytes(good_png.getvalue())
    _photo(64, 64).convert("L").save(add("gray.png", "loads"))
    Image.new("RGBA", (64, 64), (10, 20, 30, 0)).save(add("transparent.png", "loads"))
    palette = _photo(64, 64).convert("P")
    palette.info["transparency"] = 0
    palette.save(add("palette.png", "loads"), transparency=0)
    _photo(64, 64).convert("CMYK").save(add("cmyk.jpg", "loads"))
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(add("deep16.png", "loads"))
    Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)).save(add("float.tif", "loads"))
    _photo(64, 64).convert("1").save(add("bilevel.png", "loads"))
    frames = [_photo(48, 48, seed) for seed in range(3)]
    frames[0].save(add("animated.gif", "loads"), save_all=True, append_images=frames[1:], duration=100)
    rotated = _photo(80, 40)
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 on display
    rotated.save(add("exif-rotated.jpg", "loads"), exif=exif)
    Image.new("RGB", (1, 1), (128, 64, 32)).save(add("one-pixel.png", "loads"))
    _photo(3000, 2000).save(add("large.jpg", "loads"), quality=85)
    _photo(1500, 10).save(add("wide-150-to-1.png", "loads"))
    _photo(64, 48).save(add("photo.webp", "loads"))
    _photo(64, 48).save(add("photo.bmp", "loads"))
    _photo(64, 64).convert("LA").save(add("gray-alpha.png", "loads"))
    clip = np.stack([np.asarray(_photo(64, 48, seed)) for seed in range(12)])
    write_video(add("clip.mp4", "loads"), clip, fps=12)
    write_video(add("tiny-clip.mp4", "loads"), clip[:, :16, :16].copy(), fps=12)
    truncated = (folder / "clip.mp4").read_bytes()
    add("truncated.mp4", "either").write_bytes(truncated[: len(truncated) // 2])  # loads if its index survived
    return kinds


def kind_of(name: str) -> str:
    return "video" if name.endswith((".mp4", ".avi")) else "image"
