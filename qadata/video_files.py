"""Writing video files with the ffmpeg binary that ships in `imageio-ffmpeg` (no system ffmpeg needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, crf: int = 18,
                extra: list[str] | None = None) -> Path:
    """frames [N, H, W, 3] uint8 -> an H.264 file. Odd sizes use 4:4:4 chroma (4:2:0 needs even sides).

    `extra`: further ffmpeg output options (e.g. a scale or setpts filter).
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    count, height, width, _ = frames.shape
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    command = [
        ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
        "-pix_fmt", pix_fmt, *(extra or []), str(path),
    ]
    result = subprocess.run(command, input=frames.tobytes(), capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {result.stderr.decode(errors='replace')[-500:]}")
    return Path(path)


def set_display_rotation(source: str | Path, target: str | Path, degrees: int) -> Path:
    """A copy of `source` whose container says: show it rotated by `degrees` (as phones record)."""
    command = [ffmpeg(), "-y", "-loglevel", "error", "-display_rotation", str(degrees), "-i", str(source),
               "-c", "copy", str(target)]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not rotate {source}: {result.stderr.decode(errors='replace')[-500:]}")
    return Path(target)
