"""Speed of the video data flow (qadata/video.py) against two baselines, measured in one run.

    python benchmarks/video_flow.py [--clips 6] [--frames 240] [--size 960x540] [--gop 60] [--bframes 3]

Every method builds the same pictures per clip (a 4 x 4 grid of 16 frames sampled uniformly in
time + 3 full-resolution frames):
  flow         the data flow as training, evaluate and score run it (video.decoder: pyav): PyAV
               decoding the needed frames and the frames they depend on, skipping the rest;
  flow-decord  the data flow with video.decoder: decord (get_batch of the needed frames);
  all          decord, decoding every frame of the clip, then picking;
  pyav-seek    PyAV, seeking to each needed frame and decoding from the keyframe before it.
Prints clips/s, the time until the first batch (`--batch` clips) is ready, and the ratios.
Clips are generated: panning over scikit-image photos, H.264 (x264 veryfast) at CRF 23, a keyframe
every `--gop`, `--bframes` B-frames (x264's default 3; phone encoders often write 0).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from launch.trainer.config import load_config
from qadata.benchmark_set import pan_clip
from qadata.generated import photo_pixels
from qadata.sparse_decode import read_frames
from qadata.video import VideoSettings, cell_size, pack_grid, sampled, shrink, uniform_times, video_pictures
from qadata.video_files import write_video

SETTINGS = VideoSettings(**{**load_config().video, "decoder": "pyav"})
DECORD = VideoSettings(**{**load_config().video, "decoder": "decord"})


def pictures_from(frames: dict[int, np.ndarray], wanted_global, wanted_local) -> list[Image.Image]:
    height, width = frames[int(wanted_global[0])].shape[:2]
    cell = cell_size(width, height, SETTINGS)
    grid = pack_grid([shrink(frames[int(i)], cell) for i in wanted_global], SETTINGS.grid_columns)
    return [grid, *(Image.fromarray(frames[int(i)]) for i in wanted_local)]


def decode_all(path: str) -> list[Image.Image]:
    import decord

    reader = decord.VideoReader(path, num_threads=1)
    every = reader.get_batch(list(range(len(reader)))).asnumpy()
    stamps = reader.get_frame_timestamp(np.arange(len(reader)))
    g, loc = sampled(stamps[:, 0], float(stamps[-1, 1]), SETTINGS)
    return pictures_from(dict(enumerate(every)), g, loc)


def pyav_needed(path: str) -> list[Image.Image]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        duration = float(stream.duration * stream.time_base) if stream.duration else float(container.duration) / 1e6
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        times = {"g": uniform_times(start, start + duration, SETTINGS.global_frames),
                 "l": uniform_times(start, start + duration, SETTINGS.local_frames)}
        targets = sorted(set(np.concatenate(list(times.values())).round(6)))
        found: dict[float, np.ndarray] = {}
        for target in targets:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
            previous = None
            for frame in container.decode(stream):
                if frame.time is not None and frame.time > target + 1e-6:
                    break
                previous = frame
            found[target] = (previous or frame).to_ndarray(format="rgb24")
    index = {t: k for k, t in enumerate(targets)}
    frames = {k: found[t] for t, k in index.items()}
    return pictures_from(frames, [index[t] for t in times["g"].round(6)], [index[t] for t in times["l"].round(6)])


def timed(method, paths: list[str], batch: int) -> tuple[float, float]:
    """(clips per second over all clips, seconds until the first `batch` clips are ready)."""
    start = time.perf_counter()
    first = None
    for k, path in enumerate(paths, 1):
        method(path)
        if k == batch:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return len(paths) / total, first if first is not None else total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=240, help="frames per clip (240: 8 s at 30 fps)")
    parser.add_argument("--size", default="960x540")
    parser.add_argument("--gop", type=int, default=60, help="frames between keyframes")
    parser.add_argument("--bframes", type=int, default=3, help="x264 B-frames between references")
    parser.add_argument("--batch", type=int, default=4, help="clips in the first batch")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    photos = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "hubble_deep_field")
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for k in range(args.clips):
            clip = pan_clip(photo_pixels(photos[k % len(photos)]), args.frames, height, rng, width=width)
            path = Path(folder) / f"clip{k}.mp4"
            write_video(path, clip, fps=30, crf=23, extra=["-g", str(args.gop), "-bf", str(args.bframes)])
            paths.append(str(path))
        methods = {"flow": lambda p: video_pictures(p, SETTINGS), "flow-decord": lambda p: video_pictures(p, DECORD),
                   "all": decode_all, "pyav-seek": pyav_needed}
        counts = {}
        read_frames(paths[0], lambda starts, end: np.concatenate(sampled(starts, end, SETTINGS)), counts)
        check = {name: [pic.size for pic in method(paths[0])] for name, method in methods.items()}
        assert len({tuple(v) for v in check.values()}) == 1, f"methods build different pictures: {check}"
        results = {}
        for name, method in methods.items():
            runs = [timed(method, paths, args.batch) for _ in range(args.repeats)]
            results[name] = (max(r[0] for r in runs), min(r[1] for r in runs))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"{args.clips} clips of {args.frames} frames at {width}x{height}, keyframe every {args.gop}, "
          f"{args.bframes} B-frames; flow decodes {counts['decoded']} of {counts['frames']} frames of a clip")
    for name, (rate, first) in results.items():
        print(f"{name:11s} {rate:6.2f} clips/s, first batch of {args.batch} in {first:6.2f} s")
    flow = results["flow"]
    for name in [n for n in results if n != "flow"]:
        rate, first = results[name]
        print(f"flow vs {name}: {flow[0] / rate:.1f}x clips/s, first batch {first / flow[1]:.1f}x sooner")


if __name__ == "__main__":
    main()
