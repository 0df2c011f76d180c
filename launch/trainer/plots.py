"""Training curves as a picture: reward and its branches, format rate, answer spread, validation SRCC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # figures without pyplot: no GUI backend, safe in any thread

PANELS = (
    ("reward", ("reward/total", "reward/accuracy"), "reward"),
    ("branches", ("reward/response", "reward/preference"), "branch reward"),
    ("format", ("reward/format",), "format rate"),
    ("spread", ("answers/within_group_spread",), "within-group std of scores"),
)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def training_curves(steps: list[dict], evals: dict, path: str | Path, title: str) -> Path:
    """steps: one dict of metrics per step (with "step"); evals: {step: {"srcc": ...}}. Writes a PNG."""
    fig = Figure(figsize=(4 * (len(PANELS) + 1), 3.2))
    axes = fig.subplots(1, len(PANELS) + 1)
    x = np.array([s["step"] for s in steps])
    window = max(1, len(steps) // 20)
    for ax, (_, keys, label) in zip(axes, PANELS):
        for key in keys:
            values = np.array([s.get(key, np.nan) for s in steps], dtype=float)
            if len(values):
                ax.plot(x, values, alpha=0.25)
                ax.plot(x[window - 1 :] if len(values) >= window else x, _smooth(values, window), label=key)
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.legend(fontsize=7)
    ax = axes[-1]
    batch = np.array([s.get("answers/batch_srcc", np.nan) for s in steps], dtype=float)
    if len(batch) >= window:
        ax.plot(x[window - 1 :], _smooth(np.nan_to_num(batch), window), label="training batch (sampled)")
    points = sorted((int(k), v["srcc"]) for k, v in evals.items() if v.get("srcc") is not None)
    if points:
        ax.plot(*zip(*points), marker="o", label="held-out (validation)")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7)
    ax.set_title("SRCC of predicted score vs MOS")
    ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path
