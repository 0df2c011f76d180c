"""The embedded default data: photos that scikit-image ships, distorted with known quality.

The default task uses global distortions (exposure, contrast, colourfulness) because a tiny random
vision tower can perceive those and not blur or noise (docs/architecture.md, "Embedded defaults").
MOS per type and level is anchored on KADID-10K's human means (Darken, Brighten, Sat_Lab); contrast
reduction has no monotone KADID type, so its anchors are ours. Deterministic for a given seed.
Held-out references form the `test` split, so evaluation is on photos never trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from qadata.manifest import write_manifest

# level 1..5 -> (strength, MOS)
DISTORTIONS = {
    "darken": ([0.2, 0.35, 0.5, 0.65, 0.8], [4.60, 4.53, 4.23, 3.53, 2.22]),
    "brighten": ([0.15, 0.3, 0.45, 0.6, 0.75], [4.51, 4.29, 3.63, 2.70, 1.81]),
    "desaturate": ([0.2, 0.4, 0.6, 0.8, 1.0], [4.58, 3.33, 2.65, 1.82, 1.52]),
    "contrast": ([0.8, 0.6, 0.45, 0.3, 0.15], [4.30, 3.70, 3.00, 2.30, 1.60]),
}
PRISTINE_MOS = 4.75

TRAIN_PHOTOS = (
    "chelsea", "colorwheel", "hubble_deep_field", "immunohistochemistry", "motorcycle_left", "motorcycle_right", "logo",
)
TEST_PHOTOS = ("coffee", "rocket", "retina", "astronaut")


def photo_pixels(name: str) -> np.ndarray:
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name.endswith("left") else right
    image = getattr(skimage.data, name)()
    if image.shape[-1] == 4:  # logo: RGBA on white
        alpha = image[..., 3:4] / 255.0
        image = (image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return image


def reference_crops(image: np.ndarray, side: int) -> list[np.ndarray]:
    """Two square crops (the two ends of the long side; top and bottom halves of a square photo),
    resized to side x side, as float RGB in [0, 1]. Each is a reference of its own content."""
    h, w = image.shape[:2]
    if h == w:
        half = h // 2
        boxes = [(0, half // 2, half), (half, half // 2, half)]  # (top, left, size)
    else:
        s = min(h, w)
        boxes = [(0, 0, s), (h - s, w - s, s)]
    out = []
    for top, left, size in boxes:
        crop = Image.fromarray(image[top : top + size, left : left + size]).resize((side, side), Image.BICUBIC)
        out.append(np.asarray(crop, dtype=np.float64) / 255.0)
    return out


def distort(image: np.ndarray, kind: str, strength: float) -> np.ndarray:
    """float RGB [H, W, 3] in [0, 1] -> the distorted image, same shape and range."""
    if kind == "darken":
        out = image * (1.0 - strength)
    elif kind == "brighten":
        out = image + (1.0 - image) * strength
    elif kind == "desaturate":
        gray = image @ np.array([0.299, 0.587, 0.114])
        out = image * (1.0 - strength) + gray[..., None] * strength
    elif kind == "contrast":
        out = image.mean() + (image - image.mean()) * strength
    else:
        raise ValueError(f"unknown distortion {kind!r}: expected one of {sorted(DISTORTIONS)}")
    return np.clip(out, 0.0, 1.0)


def _versions(reference: np.ndarray, include_pristine: bool):
    """(distortion, level, pixels, MOS) for every version of one reference."""
    if include_pristine:
        yield "pristine", 0, reference, PRISTINE_MOS
    for kind, (strengths, mos_by_level) in DISTORTIONS.items():
        for level, (strength, mos) in enumerate(zip(strengths, mos_by_level), start=1):
            yield kind, level, distort(reference, kind, strength), mos


def generate(folder: str | Path, side: int = 112, include_pristine: bool = False) -> Path:
    """Write images and manifest.parquet under `folder`; returns the manifest path.

    Every photo gives two references (crops); the `test` split's photos are never trained on.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, photos in (("train", TRAIN_PHOTOS), ("test", TEST_PHOTOS)):
        for photo in photos:
            for part, reference in enumerate(reference_crops(photo_pixels(photo), side)):
                for kind, level, pixels, mos in _versions(reference, include_pristine):
                    name = f"images/{photo}-{part}_{kind}_{level}.png"
                    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(folder / name)
                    row = {"path": name, "mos": mos, "mos_raw": mos, "dataset": "generated-global", "split": split}
                    row.update(kind="image", photo=photo, reference=f"{photo}-{part}", distortion=kind, level=level)
                    rows.append(row)
    return write_manifest(pd.DataFrame(rows), folder / "manifest.parquet")
