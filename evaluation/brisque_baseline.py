"""BRISQUE (Mittal, Moorthy & Bovik, 2012), the classical no-reference baseline, fully offline.

36 natural-scene-statistics features (generalised Gaussian fits of the MSCN coefficients and of
their four neighbour products, at full and half scale) fed to the support-vector regressor trained
on LIVE by the authors. The trained regressor (libsvm text model and feature ranges) is data shipped
by the PyPI package `brisque`; it is read from that package's folder without importing its code.
Scores are DMOS-like: about 0 (pristine) to 100 (bad) — lower is better.
"""

from __future__ import annotations

import importlib.util
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage, special

_SHAPES = np.arange(0.2, 10.0005, 0.001)  # candidate GGD shape parameters, as in the original fit
_GAMMA_1, _GAMMA_2, _GAMMA_3 = special.gamma(1 / _SHAPES), special.gamma(2 / _SHAPES), special.gamma(3 / _SHAPES)
_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # horizontal, vertical, two diagonals


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    return window / window.sum()


def mscn(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a [H, W] luminance image on 0-255."""
    window = _gaussian_window()
    mu = ndimage.correlate(gray, window, mode="constant")
    sigma = np.sqrt(np.abs(ndimage.correlate(gray * gray, window, mode="constant") - mu * mu))
    return (gray - mu) / (sigma + 1.0)


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """Symmetric generalised Gaussian by moment matching: (shape, variance)."""
    variance = float(np.mean(x * x))
    rho = variance / max(float(np.mean(np.abs(x))) ** 2, 1e-12)
    shape = _SHAPES[np.argmin(np.abs(rho - _GAMMA_1 * _GAMMA_3 / _GAMMA_2**2))]
    return float(shape), variance


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian: (shape, mean, left variance, right variance)."""
    left = np.sqrt(np.mean(x[x < 0] ** 2)) if np.any(x < 0) else 1e-6
    right = np.sqrt(np.mean(x[x > 0] ** 2)) if np.any(x > 0) else 1e-6
    ratio = left / right
    r_hat = float(np.mean(np.abs(x))) ** 2 / max(float(np.mean(x * x)), 1e-12)
    r_norm = r_hat * (ratio**3 + 1) * (ratio + 1) / (ratio**2 + 1) ** 2
    shape = float(_SHAPES[np.argmin((_GAMMA_2**2 / (_GAMMA_1 * _GAMMA_3) - r_norm) ** 2)])
    mean = (right - left) * special.gamma(2 / shape) / special.gamma(1 / shape) * np.sqrt(
        special.gamma(1 / shape) / special.gamma(3 / shape)
    )
    return shape, float(mean), float(left**2), float(right**2)


def features(image: Image.Image) -> np.ndarray:
    """The 36 BRISQUE features [36] of an image (any mode; its luminance is used)."""
    gray = np.asarray(image.convert("RGB"), dtype=np.float64) @ np.array([0.2989, 0.5870, 0.1140])
    out: list[float] = []
    for scale in range(2):
        coefficients = mscn(gray)
        out.extend(ggd_fit(coefficients))
        for shift in _NEIGHBOURS:
            product = coefficients * np.roll(coefficients, shift, axis=(0, 1))
            out.extend(aggd_fit(product.ravel()))
        if scale == 0:
            half = Image.fromarray(gray.astype(np.float32), mode="F")
            half = half.resize((max(1, gray.shape[1] // 2), max(1, gray.shape[0] // 2)), Image.Resampling.BICUBIC)
            gray = np.asarray(half, dtype=np.float64)
    return np.asarray(out)


class SupportVectorRegressor:
    """An RBF epsilon-SVR read from a libsvm text model: f(x) = sum_i c_i exp(-gamma |x - s_i|^2) - rho."""

    def __init__(self, path: str | Path):
        header: dict[str, str] = {}
        coefficients, vectors = [], []
        with open(path) as lines:
            for line in lines:
                if line.strip() == "SV":
                    break
                key, _, value = line.strip().partition(" ")
                header[key] = value
            if header.get("kernel_type") != "rbf" or header.get("svm_type") != "epsilon_svr":
                raise ValueError(f"{path}: expected an RBF epsilon_svr libsvm model, got {header}")
            for line in lines:
                parts = line.split()
                if not parts:
                    continue
                coefficients.append(float(parts[0]))
                vectors.append({int(i): float(v) for i, v in (p.split(":") for p in parts[1:])})
        dims = max(max(v) for v in vectors)
        self.support = np.zeros((len(vectors), dims))
        for row, vector in enumerate(vectors):
            for index, value in vector.items():
                self.support[row, index - 1] = value
        self.coefficients = np.asarray(coefficients)
        self.gamma, self.rho = float(header["gamma"]), float(header["rho"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x [N, dims] -> [N]."""
        distances = ((x[:, None, :] - self.support[None]) ** 2).sum(axis=-1)
        return np.exp(-self.gamma * distances) @ self.coefficients - self.rho


def model_folder() -> Path:
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("BRISQUE needs the trained regressor of the PyPI package `brisque` (pip install brisque)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@lru_cache(maxsize=1)
def _model() -> tuple[SupportVectorRegressor, np.ndarray, np.ndarray]:
    folder = model_folder()
    with open(folder / "normalize.pickle", "rb") as handle:
        ranges = pickle.load(handle)
    low, high = np.asarray(ranges["min_"], float), np.asarray(ranges["max_"], float)
    return SupportVectorRegressor(folder / "svm.txt"), low, high


def brisque_score(image: Image.Image) -> float:
    """BRISQUE score of one image: ~0 pristine .. ~100 bad (may leave that range)."""
    regressor, low, high = _model()
    scaled = -1 + 2 * (features(image) - low) / (high - low)
    return float(regressor(scaled[None])[0])


def brisque_to_mos_scale(score: float) -> float:
    """A fixed, monotone map of a BRISQUE score onto the [1, 5] MOS scale (5 at 0, 1 at 100), for MAE."""
    return float(5 - 4 * np.clip(score, 0, 100) / 100)
