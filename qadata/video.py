"""The video data flow of PreResQ-R1: one global-temporal picture and L local-spatial frames per clip.

(a) global: N frames sampled uniformly in time over the whole clip, each downscaled, packed into a
grid (default 16 frames, 4 x 4) — the model compares them over time; (b) local: L single frames at
full resolution (default 3), spread over the clip — the model judges their detail. Decoded with
decord, only the frames needed. Sampling is by presentation time, so variable frame rate clips are
sampled evenly in time; clips shorter than N frames repeat frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from qadata.media import MediaError


@dataclass(frozen=True)
class VideoSettings:
    global_frames: int = 16      # N frames in the packed picture
    grid_columns: int = 4        # the grid is columns x ceil(N / columns)
    cell_scale: float = 0.25     # each packed frame's side relative to the frame's (0.25: a 4x4 grid ~ one frame)
    local_frames: int = 3        # L full-resolution frames
    min_cell_side: int = 28      # one vision patch pair of Qwen2.5-VL: smaller cells carry nothing

    def __post_init__(self):
        for name in ("global_frames", "grid_columns", "local_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"video.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.cell_scale <= 1:
            raise ValueError(f"video.cell_scale must be in (0, 1], got {self.cell_scale}")


def uniform_times(start: float, end: float, count: int) -> np.ndarray:
    """`count` times at the centres of equal slices of [start, end)."""
    return start + (np.arange(count) + 0.5) * (end - start) / count


def frames_at(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time: the last frame starting at or before it. timestamps [F] sorted.

    A microsecond of slack: a time that falls on a frame's start in exact arithmetic picks that frame
    even when the container's rounded timestamps put the start a hair later.
    """
    return np.clip(np.searchsorted(timestamps, times + 1e-6, side="right") - 1, 0, len(timestamps) - 1)


def pack_grid(frames: list[Image.Image], columns: int, cell: tuple[int, int]) -> Image.Image:
    """Frames resized to `cell` (w, h) and tiled row by row; unused cells stay black."""
    rows = math.ceil(len(frames) / columns)
    grid = Image.new("RGB", (columns * cell[0], rows * cell[1]))
    for k, frame in enumerate(frames):
        grid.paste(frame.resize(cell, Image.Resampling.BILINEAR), ((k % columns) * cell[0], (k // columns) * cell[1]))
    return grid


def video_pictures(path: str | Path, settings: VideoSettings = VideoSettings()) -> list[Image.Image]:
    """[global grid picture, local frame 1..L] as RGB PIL images; MediaError for unreadable or empty clips."""
    import decord

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        count = len(reader)
    except (decord.DECORDError, RuntimeError, OSError) as error:
        raise MediaError(f"{path}: cannot read video ({str(error).splitlines()[0][:200]})") from None
    if count == 0:
        raise MediaError(f"{path}: video has no frames")
    try:
        starts = reader.get_frame_timestamp(np.arange(count))[:, 0]
        end = float(reader.get_frame_timestamp([count - 1])[0, 1])
        if not np.all(np.isfinite(starts)) or np.any(np.diff(starts) < 0) or end <= starts[0]:
            starts, end = np.arange(count, dtype=float), float(count)  # broken timing: fall back to indices
        wanted_global = frames_at(starts, uniform_times(starts[0], end, settings.global_frames))
        wanted_local = frames_at(starts, uniform_times(starts[0], end, settings.local_frames))
        needed = np.unique(np.concatenate([wanted_global, wanted_local]))
        decoded = reader.get_batch(needed.tolist()).asnumpy()  # [K, H, W, 3] uint8, only these frames
    except (decord.DECORDError, RuntimeError) as error:
        raise MediaError(f"{path}: cannot decode video frames ({str(error).splitlines()[0][:200]})") from None
    frame = {int(i): Image.fromarray(decoded[k]) for k, i in enumerate(needed)}
    width, height = frame[int(needed[0])].size
    cell = (max(settings.min_cell_side, round(width * settings.cell_scale)),
            max(settings.min_cell_side, round(height * settings.cell_scale)))
    grid = pack_grid([frame[int(i)] for i in wanted_global], settings.grid_columns, cell)
    return [grid, *(frame[int(i)] for i in wanted_local)]
