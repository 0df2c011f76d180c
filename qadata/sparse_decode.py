"""Decode only chosen frames of a clip with PyAV, skipping the frames nothing else needs.

Frames that no other frame references (most B-frames of an x264 stream) are dropped by the decoder
(`skip_frame = NONREF`) unless they are wanted; reference frames are decoded because wanted frames
depend on them; only wanted frames are converted to RGB. The pictures are the same, pixel for pixel,
as decoding everything (tests compare with decord) — about half the decoding work on B-frame streams.
A stream without B-frames (many phone encoders) saves only the colour conversion. Frames come back
still decoded (YUV); `to_rgb` converts one, scaled on the way when a smaller picture is wanted.

The timeline comes from the packets' presentation timestamps, read without decoding, so a wanted
frame is known before its packet reaches the decoder. Streams without timestamps, and any clip
where the fast pass misses a frame, are decoded a second way: every frame, in output order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from qadata.errors import MediaError, read_error

# starts [F] seconds (NaN where unknown), end of the last frame (s) -> indices into starts of the wanted frames
Pick = Callable[[np.ndarray, float], np.ndarray]


def _open(path: str | Path):
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise read_error(f"{path}: cannot read video ({str(error).splitlines()[0][:200]})", error) from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "NONE"  # frames come back in order and skip_frame applies to the packet sent
    return container, stream


def shown_size(frame) -> tuple[int, int]:
    """(width, height) of the frame as displayed, after the container's rotation."""
    return (frame.height, frame.width) if _turns(frame) % 2 else (frame.width, frame.height)


def to_rgb(frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """[H, W, 3] uint8 as displayed (rotation applied); size (w, h): scaled in the same pass (swscale bilinear)."""
    turns = _turns(frame)
    if size is None:
        pixels = frame.to_ndarray(format="rgb24")
    else:
        width, height = size if turns % 2 == 0 else size[::-1]
        pixels = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def _turns(frame) -> int:
    """Quarter turns counter-clockwise that the display matrix asks for."""
    return round((getattr(frame, "rotation", 0) or 0) / 90) % 4


def _timeline(stamps: list[float | None], last_duration: float) -> tuple[np.ndarray, float]:
    """Frame starts (s; NaN where missing) and the end of the last frame. The picker judges broken timing."""
    starts = np.array([np.nan if t is None else t for t in stamps], dtype=float)
    step = last_duration if last_duration > 0 else (float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0)
    return starts, float(starts[-1] + step)


def _decode_wanted(packets, stream, wanted_pts: set[int], counts: dict) -> dict:
    """Feed the packets in decode order; non-reference frames are skipped unless wanted."""
    import av

    context = stream.codec_context
    found = {}

    def take(frames):
        for frame in frames:
            counts["decoded"] += 1
            if frame.pts in wanted_pts and frame.pts not in found:
                found[frame.pts] = frame

    for packet in packets:
        context.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
        try:
            take(context.decode(packet))
        except av.error.InvalidDataError:
            continue  # a damaged packet: the decoder conceals it in later frames; a missed frame falls back
        if len(found) == len(wanted_pts):
            return found
    context.skip_frame = "DEFAULT"
    try:
        take(context.decode(None))
    except av.error.FFmpegError:
        pass
    return found


def read_frames(path: str | Path, pick: Pick, counts: dict | None = None) -> list:
    """The frames `pick` chooses from the clip's timeline, as decoded `av.VideoFrame`s in the order picked.

    MediaError (with the path) for a file that is not a video, has no frames, or cannot be decoded.
    counts, when given, receives frames (in the clip), decoded (by the decoder) and fallback (bool).
    """
    import av

    counts = {} if counts is None else counts
    counts.update(frames=0, decoded=0, fallback=False)

    container, stream = _open(path)
    try:
        try:
            packets = [p for p in container.demux(stream) if p.size and not p.is_discard]
        except av.error.FFmpegError as error:
            raise MediaError(f"{path}: cannot read video ({str(error).splitlines()[0][:200]})") from None
        if not packets:
            raise MediaError(f"{path}: video has no frames")
        counts["frames"] = len(packets)
        if any(p.pts is None for p in packets):
            return _read_in_output_order(path, pick, counts)
        shown = sorted(packets, key=lambda p: p.pts)
        base = float(stream.time_base)
        starts, end = _timeline([p.pts * base for p in shown], (shown[-1].duration or 0) * base)
        chosen = [shown[int(i)].pts for i in pick(starts, end)]
        found = _decode_wanted(packets, stream, set(chosen), counts)
    finally:
        container.close()
    if len(found) < len(set(chosen)):
        return _read_in_output_order(path, pick, counts)
    return [found[pts] for pts in chosen]


def _read_in_output_order(path: str | Path, pick: Pick, counts: dict) -> list:
    """Two full passes: count the frames the decoder puts out (and their times), then convert the picked."""
    import av

    def frames():
        container, stream = _open(path)
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError as error:
            raise MediaError(f"{path}: cannot decode video frames ({str(error).splitlines()[0][:200]})") from None
        finally:
            container.close()

    stamps, duration = [], 0.0
    for frame in frames():
        stamps.append(frame.time)
        duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
    if not stamps:
        raise MediaError(f"{path}: video has no frames")
    counts.update(frames=len(stamps), decoded=counts["decoded"] + 2 * len(stamps), fallback=True)
    chosen = [int(i) for i in pick(*_timeline(stamps, duration))]
    wanted = set(chosen)
    found = {k: frame for k, frame in enumerate(frames()) if k in wanted}
    return [found[k] for k in chosen]
