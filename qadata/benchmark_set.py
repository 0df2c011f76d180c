"""The generated benchmark: labelled images and videos with known quality, made offline and seeded.

Pristine content ships in packages: scikit-image's photos (two crops each are the references) and,
for video, clips panned and zoomed across those photos (procedural motion over natural content).
Images get KADID-style distortions at 5 levels; videos get x264 compression, down/up-scaling,
stutter, flicker and noise. Labels:

  true quality = anchor(type, level) + content term,
  anchor      = KADID-10K's human mean for the matching type and level (Lin, Hosu and Saupe, KADID-10k,
                QoMEX 2019; our own anchors where KADID has no monotone match, marked below),
  content term = SSIM to the reference - the mean SSIM of that type and level, capped at +-0.3
                and at half the gap to the type's nearest other level anchor: the same distortion
                hurts some contents more than others, but not so much that levels swap (a weight
                of 2 or no cap let noise-like types overlap: per-type SRCC -0.82..-0.89),
then R simulated raters (default 30, as KADID-10K collected per image; a bias each, noise per
rating, integer 1-5 votes): MOS = their mean, with `mos_std`. Splits: the references of
`TEST_PHOTOS` are held out (`test`), and one whole distortion type per modality is held out for
cross-domain tests (`unseen_type`). Deterministic for a given seed and package set.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from skimage.metrics import structural_similarity
from tqdm import tqdm

from qadata.generated import DISTORTIONS, TEST_PHOTOS, TRAIN_PHOTOS, distort, photo_pixels, reference_crops
from qadata.manifest import write_manifest
from qadata.video_files import write_video

# type -> (strength per level 1..5, anchor MOS per level 1..5, KADID type the anchors come from)
IMAGE_TYPES = {
    "gaussian_blur": ([0.5, 1.0, 2.0, 3.0, 5.0], [4.61, 4.38, 2.91, 1.87, 1.30], "GBLUR"),
    "motion_blur": ([3, 5, 9, 13, 19], [4.60, 4.10, 2.85, 2.18, 1.67], "Motion_Blur"),
    "noise": ([0.02, 0.04, 0.07, 0.10, 0.15], [3.89, 3.39, 3.05, 2.71, 2.30], "AWGN"),
    "impulse_noise": ([0.01, 0.03, 0.06, 0.10, 0.15], [3.58, 2.93, 2.61, 2.31, 2.13], "Impulse"),
    "jpeg": ([70, 40, 20, 8, 3], [4.34, 4.25, 3.87, 1.95, 1.35], "JPEG"),
    "jpeg2000": ([20, 50, 100, 200, 400], [4.55, 4.20, 3.87, 2.44, 1.39], "JP2K"),
    # the four global types of the embedded default set (qadata/generated.py), with the same anchors
    "brighten": (*DISTORTIONS["brighten"], "Brighten"),
    "darken": (*DISTORTIONS["darken"], "Darken"),
    "contrast": (*DISTORTIONS["contrast"], "ours (KADID's is not monotone)"),
    "desaturate": (*DISTORTIONS["desaturate"], "Sat_Lab"),
    "quantization": ([48, 24, 12, 6, 3], [4.17, 3.93, 3.69, 3.37, 2.80], "Quantization"),
    "pixelate": ([2, 3, 4, 6, 10], [3.89, 3.10, 2.90, 2.79, 1.50], "Pixelate"),
}
# Anchors for videos borrow the nearest KADID image type; stutter and flicker have none there.
VIDEO_TYPES = {
    "compression": ([28, 34, 40, 45, 51], [4.34, 4.25, 3.87, 1.95, 1.35], "JPEG"),
    "scaling": ([1.5, 2.0, 3.0, 4.0, 6.0], [4.61, 4.38, 2.91, 1.87, 1.30], "GBLUR"),
    "noise": ([0.02, 0.04, 0.07, 0.10, 0.15], [3.89, 3.39, 3.05, 2.71, 2.30], "AWGN"),
    "stutter": ([2, 3, 4, 6, 8], [4.40, 3.80, 3.20, 2.50, 1.90], "ours"),
    "flicker": ([0.05, 0.10, 0.18, 0.27, 0.38], [4.40, 3.70, 3.00, 2.30, 1.70], "ours"),
}
HELD_OUT = {"image": "pixelate", "video": "flicker"}
CONTENT_WEIGHT, CONTENT_CAP = 1.0, 0.3
# KADID's pixelate means for levels 2-4 are 0.1-0.2 apart, its JPEG levels 1-2 0.09.
CONTENT_GAP_SHARE = 0.5


def distort_image(image: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """float RGB [H, W, 3] in [0, 1] -> the distorted image, same shape and range."""
    if kind in ("brighten", "darken", "contrast", "desaturate"):
        return distort(image, kind, strength)
    if kind == "gaussian_blur":
        out = ndimage.gaussian_filter(image, sigma=(strength, strength, 0))
    elif kind == "motion_blur":
        kernel = np.zeros((int(strength), int(strength)))
        kernel[int(strength) // 2, :] = 1.0 / strength  # horizontal camera shake
        out = np.stack([ndimage.convolve(image[..., c], kernel, mode="reflect") for c in range(3)], axis=-1)
    elif kind == "noise":
        out = image + rng.normal(0.0, strength, image.shape)
    elif kind == "impulse_noise":
        out = image.copy()
        hit = rng.random(image.shape[:2]) < strength
        out[hit] = rng.integers(0, 2, (int(hit.sum()), 1)).astype(float)
    elif kind in ("jpeg", "jpeg2000"):
        buffer = io.BytesIO()
        picture = Image.fromarray((image * 255).round().astype(np.uint8))
        if kind == "jpeg":
            picture.save(buffer, "JPEG", quality=int(strength))
        else:
            picture.save(buffer, "JPEG2000", quality_mode="rates", quality_layers=[float(strength)])
        out = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=float) / 255.0
    elif kind == "quantization":
        levels = float(strength)
        out = np.round(image * (levels - 1)) / (levels - 1)
    elif kind == "pixelate":
        h, w = image.shape[:2]
        small = Image.fromarray((image * 255).round().astype(np.uint8)).resize(
            (max(1, w // int(strength)), max(1, h // int(strength))), Image.Resampling.BOX)
        out = np.asarray(small.resize((w, h), Image.Resampling.NEAREST), dtype=float) / 255.0
    else:
        raise ValueError(f"unknown image distortion {kind!r}: expected one of {sorted(IMAGE_TYPES)}")
    return np.clip(out, 0.0, 1.0)


def pan_clip(photo: np.ndarray, frames: int, side: int, rng: np.random.Generator,
             width: int | None = None) -> np.ndarray:
    """A pristine clip [T, side, width or side, 3] uint8: a window that pans and slowly zooms across a photo."""
    h, w = photo.shape[:2]
    out_size = (width or side, side)
    start_size, end_size = min(h, w) * rng.uniform(0.55, 0.7), min(h, w) * rng.uniform(0.4, 0.55)
    x0, y0 = rng.uniform(0, w - start_size), rng.uniform(0, h - start_size)
    x1, y1 = rng.uniform(0, w - end_size), rng.uniform(0, h - end_size)
    picture = Image.fromarray(photo)
    out = []
    for t in np.linspace(0, 1, frames):
        size = start_size + (end_size - start_size) * t
        x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
        box = (x, y, x + size, y + size)
        out.append(np.asarray(picture.resize(out_size, Image.Resampling.BILINEAR, box=box)))
    return np.stack(out)


def distort_clip(clip: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """uint8 clip [T, H, W, 3] -> (distorted clip, x264 CRF to encode it with)."""
    x = clip.astype(float) / 255.0
    crf = 18
    if kind == "compression":
        crf = int(strength)
    elif kind == "scaling":
        t, h, w, _ = clip.shape
        small = [Image.fromarray(f).resize((max(2, round(w / strength)), max(2, round(h / strength))),
                                           Image.Resampling.BILINEAR) for f in clip]
        x = np.stack([np.asarray(s.resize((w, h), Image.Resampling.BILINEAR)) for s in small]) / 255.0
    elif kind == "noise":
        x = x + rng.normal(0.0, strength, x.shape)
    elif kind == "stutter":
        hold = int(strength)
        x = x[(np.arange(len(x)) // hold) * hold]  # each shown frame held for `hold` frame times
    elif kind == "flicker":
        phase = rng.uniform(0, 2 * np.pi)
        gain = 1.0 + strength * np.sin(np.arange(len(x)) * 2.4 + phase)  # ~ 9 Hz at 24 fps
        x = x * gain[:, None, None, None]
    else:
        raise ValueError(f"unknown video distortion {kind!r}: expected one of {sorted(VIDEO_TYPES)}")
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8), crf


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def simulated_raters(true: np.ndarray, raters: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Integer 1-5 votes of `raters` people (a bias each, noise per vote) -> (MOS [N], std [N])."""
    bias = rng.normal(0.0, 0.3, raters)
    votes = np.clip(np.round(true[:, None] + bias[None, :] + rng.normal(0.0, 0.6, (len(true), raters))), 1, 5)
    return votes.mean(axis=1), votes.std(axis=1)


def _content_cap(kind: str, anchor: float) -> float:
    """The largest shift content may give an item of this type whose level has `anchor` (MOS units)."""
    anchors = (IMAGE_TYPES.get(kind) or VIDEO_TYPES[kind])[1]
    gaps = [abs(anchor - other) for other in anchors if other != anchor]
    return min(CONTENT_CAP, CONTENT_GAP_SHARE * min(gaps)) if gaps else CONTENT_CAP


def _labels(rows: list[dict], raters: int, rng: np.random.Generator) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    mean_ssim = frame.groupby(["distortion", "level"])["ssim"].transform("mean")
    cap = frame.apply(lambda row: _content_cap(row["distortion"], row["anchor"]), axis=1)
    content = np.clip(CONTENT_WEIGHT * (frame["ssim"] - mean_ssim), -cap, cap)
    frame["mos_true"] = np.clip(frame["anchor"] + content, 1.0, 5.0)
    frame["mos"], frame["mos_std"] = simulated_raters(frame["mos_true"].to_numpy(), raters, rng)
    frame["mos_raw"] = frame["mos"]
    return frame


def generate_benchmark(folder: str | Path, image_side: int = 224, photos: tuple[str, ...] | None = None,
                       video_photos: tuple[str, ...] | None = None, video_side: int = 96, video_frames: int = 24,
                       levels: tuple[int, ...] = (1, 2, 3, 4, 5), raters: int = 30, seed: int = 0,
                       progress: bool = True) -> Path:
    """Write images/, videos/ and manifest.parquet under `folder`; returns the manifest path.

    photos: which photos give image references (two crops each; default: all 11); video_photos: which
    give one pristine clip each (default: 4). The datasets are `generated-image` and `generated-video`.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    photos = photos if photos is not None else TRAIN_PHOTOS + TEST_PHOTOS
    video_photos = video_photos if video_photos is not None else ("chelsea", "motorcycle_left", "coffee", "rocket")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "videos").mkdir(parents=True, exist_ok=True)

    def split(photo: str, kind: str, distortion: str) -> str:
        if distortion == HELD_OUT[kind]:
            return "unseen_type"
        return "test" if photo in TEST_PHOTOS else "train"

    image_rows = []
    jobs = [(p, part, ref) for p in photos for part, ref in enumerate(reference_crops(photo_pixels(p), image_side))]
    for photo, part, reference in tqdm(jobs, desc="generated images", unit="reference", disable=not progress):
        for kind, (strengths, anchors, _) in IMAGE_TYPES.items():
            for level in levels:
                pixels = distort_image(reference, kind, strengths[level - 1], rng)
                name = f"images/{photo}-{part}_{kind}_{level}.png"
                Image.fromarray((pixels * 255).round().astype(np.uint8)).save(folder / name)
                image_rows.append({"path": name, "kind": "image", "dataset": "generated-image",
                                   "split": split(photo, "image", kind), "reference": f"{photo}-{part}",
                                   "distortion": kind, "level": level, "anchor": anchors[level - 1],
                                   "ssim": _ssim(reference, pixels)})
    video_rows = []
    for photo in tqdm(video_photos, desc="generated videos", unit="reference", disable=not progress):
        clip = pan_clip(photo_pixels(photo), video_frames, video_side, rng)
        reference = clip.astype(float) / 255.0
        for kind, (strengths, anchors, _) in VIDEO_TYPES.items():
            for level in levels:
                distorted, crf = distort_clip(clip, kind, strengths[level - 1], rng)
                name = f"videos/{photo}_{kind}_{level}.mp4"
                write_video(folder / name, distorted, fps=24, crf=crf)
                # SSIM of a few frames stands in for the full-reference term; compression is measured after coding.
                shown = distorted if kind != "compression" else _decoded(folder / name)
                ssim = float(np.mean([_ssim(reference[t], shown[t].astype(float) / 255.0)
                                      for t in range(0, video_frames, max(1, video_frames // 4))]))
                video_rows.append({"path": name, "kind": "video", "dataset": "generated-video",
                                   "split": split(photo, "video", kind), "reference": photo, "distortion": kind,
                                   "level": level, "anchor": anchors[level - 1], "ssim": ssim})
    parts = [_labels(rows, raters, rng) for rows in (image_rows, video_rows) if rows]
    return write_manifest(pd.concat(parts, ignore_index=True), folder / "manifest.parquet")


def _decoded(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def ci_benchmark(folder: str | Path) -> Path:
    """The CI-sized set: 4 image references of 2 photos (one held out) at levels 1, 3, 5 (144 images,
    112 px) and 2 pristine clips (30 clips of 16 frames, 64 px). A few seconds on 2 cores."""
    return generate_benchmark(folder, image_side=112, photos=("chelsea", "coffee"), video_photos=("chelsea", "coffee"),
                              video_side=64, video_frames=16, levels=(1, 3, 5), progress=False)
