"""The plain score reward that PRPO is compared against: 1 - |prediction - MOS| / 4, per answer.

Shapes: predictions [B, K] (mean of each answer's D numbers), mos [B]; both on the [1, 5] scale, so the
reward is 1 for an exact answer and 0 four points off (negative further off, as parsed numbers may be).
"""

from __future__ import annotations

import numpy as np

SCALE_SPAN = 4.0  # 5 - 1


def absolute_error_reward(predictions: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """[B, K], [B] -> [B, K]."""
    predictions, mos = np.asarray(predictions, dtype=np.float64), np.asarray(mos, dtype=np.float64)
    return 1.0 - np.abs(predictions - mos[:, None]) / SCALE_SPAN
