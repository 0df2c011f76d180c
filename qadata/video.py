"""The video data flow of PreResQ-R1: one global-temporal picture and L local-spatial frames per clip.

(a) global: N frames sampled uniformly in time over the whole clip, each downscaled, packed into a
grid (default 16 frames, 4 x 4) — the model compares them over time; (b) local: L single frames at
full resolution (default 3), spread over the clip — the model judges their detail. Only the frames
needed are decoded. Sampling is by presentation time, so variable frame rate clips are sampled
evenly in time; clips shorter than N frames repeat frames.

Two decoders give the same pixels: `pyav` (default; qadata/sparse_decode.py also skips the frames
no wanted frame depends on — about 2x less decoding on B-frame streams) and `decord` (seeks and
decodes every frame up to each wanted one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from qadata.errors import MediaError, read_error

MIN_CELL_SIDE = 28  # one vision patch pair of Qwen2.5-VL: a smaller grid cell carries nothing


@dataclass(frozen=True)
class VideoSettings:
    """The config's `video:` section (values and their checks: configs/base.yaml, launch/trainer/config.py)."""

    global_frames: int   # N frames in the packed picture
    grid_columns: int    # the grid is columns x ceil(N / columns)
    cell_scale: float    # each packed frame's side relative to the frame's (0.25: a 4x4 grid ~ one frame)
    local_frames: int    # L full-resolution frames
    decoder: str         # a key of DECODERS: the same frames either way
    max_stream_pixels: int  # a frame larger than this (width x height, as the header declares) is refused
    max_seconds: float   # a clip longer than this is refused
    max_bytes: int       # a file larger than this is refused


def uniform_times(start: float, end: float, count: int) -> np.ndarray:
    """`count` times at the centres of equal slices of [start, end)."""
    return start + (np.arange(count) + 0.5) * (end - start) / count


def frames_at(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time: the last frame starting at or before it. timestamps [F] sorted.

    A microsecond of slack: a time that falls on a frame's start in exact arithmetic picks that frame
    even when the container's rounded timestamps put the start a hair later.
    """
    return np.clip(np.searchsorted(timestamps, times + 1e-6, side="right") - 1, 0, len(timestamps) - 1)


def pack_grid(cells: list[np.ndarray], columns: int) -> Image.Image:
    """Equal-sized cells [h, w, 3] uint8 tiled row by row; unused cells stay black."""
    cell_h, cell_w = cells[0].shape[:2]
    grid = np.zeros((math.ceil(len(cells) / columns) * cell_h, columns * cell_w, 3), np.uint8)
    for k, cell in enumerate(cells):
        row, column = divmod(k, columns)
        grid[row * cell_h:(row + 1) * cell_h, column * cell_w:(column + 1) * cell_w] = cell
    return Image.fromarray(grid)


def sampled(starts: np.ndarray, end: float, settings: VideoSettings) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of the grid's N frames and of the L local frames. starts [F] s; end: the last frame's.

    Broken timing (a missing or non-finite time, times going back, no span) samples by frame index.
    """
    starts = np.asarray(starts, dtype=float)
    if not np.all(np.isfinite(starts)) or np.any(np.diff(starts) < 0) or not end > starts[0]:
        starts, end = np.arange(len(starts), dtype=float), float(len(starts))
    return (frames_at(starts, uniform_times(starts[0], end, settings.global_frames)),
            frames_at(starts, uniform_times(starts[0], end, settings.local_frames)))


def cell_size(width: int, height: int, settings: VideoSettings) -> tuple[int, int]:
    """(w, h) of one packed frame in the grid."""
    return (max(MIN_CELL_SIDE, round(width * settings.cell_scale)),
            max(MIN_CELL_SIDE, round(height * settings.cell_scale)))


def check_limits(path: str | Path, settings: VideoSettings) -> None:
    """MediaError when the file, or the frame size or length its container declares, is over the settings' limits:
    read from the headers, nothing decoded (a small file can declare 16384 x 16384 frames, or an hour)."""
    import av

    try:
        size = Path(path).stat().st_size
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise read_error(f"{path}: cannot read video ({str(error).splitlines()[0][:200]})", error) from None
    try:
        if size > settings.max_bytes:
            raise MediaError(f"{path}: {size / 2**20:.0f} MiB, over video.max_bytes = {settings.max_bytes}")
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > settings.max_stream_pixels:
            raise MediaError(f"{path}: declares {width} x {height} frames, over video.max_stream_pixels = "
                             f"{settings.max_stream_pixels}")
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        else:
            seconds = container.duration / 1e6 if container.duration else 0.0
        if seconds > settings.max_seconds:
            raise MediaError(f"{path}: {seconds:.0f} s long, over video.max_seconds = {settings.max_seconds:g}")
    finally:
        container.close()


def video_pictures(path: str | Path, settings: VideoSettings) -> list[Image.Image]:
    """[global grid picture, local frame 1..L] as RGB PIL images; MediaError for unreadable, empty or over-limit
    clips."""
    check_limits(path, settings)
    cells, local = DECODERS[settings.decoder](path, settings)
    return [pack_grid(cells, settings.grid_columns), *(Image.fromarray(frame) for frame in local)]


def pyav_frames(path: str | Path, settings: VideoSettings) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the N grid cells, scaled while converted from YUV, and the L full-resolution frames), [H, W, 3] uint8 each."""
    from qadata.sparse_decode import read_frames, shown_size, to_rgb

    frames = read_frames(path, lambda starts, end: np.concatenate(sampled(starts, end, settings)))
    cell = cell_size(*shown_size(frames[0]), settings)
    return ([to_rgb(f, cell) for f in frames[:settings.global_frames]],
            [to_rgb(f) for f in frames[settings.global_frames:]])


def decord_frames(path: str | Path, settings: VideoSettings) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """As pyav_frames, through decord's index and `get_batch` of the needed frames; cells scaled by PIL."""
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
        wanted_global, wanted_local = sampled(starts, end, settings)
        needed = np.unique(np.concatenate([wanted_global, wanted_local]))
        decoded = reader.get_batch(needed.tolist()).asnumpy()  # [K, H, W, 3] uint8, only these frames
    except (decord.DECORDError, RuntimeError) as error:
        raise MediaError(f"{path}: cannot decode video frames ({str(error).splitlines()[0][:200]})") from None
    frame = {int(i): decoded[k] for k, i in enumerate(needed)}
    cell = cell_size(decoded.shape[2], decoded.shape[1], settings)
    return [shrink(frame[int(i)], cell) for i in wanted_global], [frame[int(i)] for i in wanted_local]


def shrink(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 -> [h, w, 3] with PIL's antialiased bilinear filter; size (w, h)."""
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


# pyav skips the frames nothing refers to (about half on B-frame streams); decord decodes up to each wanted one.
DECODERS = {"pyav": pyav_frames, "decord": decord_frames}
