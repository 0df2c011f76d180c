"""Quality-assessment metrics: SRCC, KRCC, PLCC raw and after the 4-parameter logistic fit, MAE.

Pure numpy/scipy functions of two 1-D arrays (predictions, MOS on the [1, 5] scale). A metric that
is undefined (fewer than 3 items, or a constant side) is None, never NaN, so averages stay finite.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2: rises from b2 to b1 around b3 with width |b4|."""
    z = np.clip(-(x - b3) / max(abs(b4), 1e-12), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic4(predictions: np.ndarray, mos: np.ndarray) -> np.ndarray | None:
    """Least-squares [b1, b2, b3, b4] mapping predictions onto MOS; None when the fit fails.

    Started at [max MOS, min MOS, mean x, std x / 4]; a negatively correlated predictor is fitted with
    the start flipped so the curve may fall.
    """
    x, y = np.asarray(predictions, float), np.asarray(mos, float)
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    high, low = (y.max(), y.min()) if stats.spearmanr(x, y).statistic >= 0 else (y.min(), y.max())
    start = [high, low, x.mean(), x.std() / 4 or 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params, _ = optimize.curve_fit(logistic4, x, y, p0=start, maxfev=20000)
        except (RuntimeError, optimize.OptimizeWarning, ValueError):
            return None
    return params if np.all(np.isfinite(params)) else None


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0


def quality_metrics(predictions, mos) -> dict[str, float | None]:
    """SRCC, KRCC, PLCC (raw), PLCC after the logistic fit, MAE (on the scale given), and n.

    Items with a non-finite prediction are left out (counted by the caller as failures).
    """
    x, y = np.asarray(predictions, float), np.asarray(mos, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out: dict[str, float | None] = {"n": float(len(x)), "srcc": None, "krcc": None, "plcc": None,
                                    "plcc_logistic": None, "mae": float(np.abs(x - y).mean()) if len(x) else None}
    if not _defined(x, y):
        return out
    out["srcc"] = float(stats.spearmanr(x, y).statistic)
    out["krcc"] = float(stats.kendalltau(x, y).statistic)
    out["plcc"] = float(stats.pearsonr(x, y).statistic)
    params = fit_logistic4(x, y)
    if params is not None:
        fitted = logistic4(x, *params)
        if np.ptp(fitted) > 0:
            out["plcc_logistic"] = float(stats.pearsonr(fitted, y).statistic)
    return out


def mean_defined(values) -> float | None:
    """Mean over the values that are defined; None if none are."""
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None
