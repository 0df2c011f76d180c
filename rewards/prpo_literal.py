"""The preference branch written as loops, one comparison at a time, straight from prpo.md.

The oracle that tests check the vectorised `rewards.prpo` against, and the baseline of
benchmarks/prpo_reward.py. Not used in training.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def literal_pairwise(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise score-rank term [B, K], one comparison at a time."""
    batch, group = s.shape
    out = np.zeros_like(s)
    for i in range(batch):
        order_i = sorted(range(group), key=lambda k: s[i, k])
        for r, k in enumerate(order_i):
            terms = []
            for z in range(batch):
                if z == i:
                    continue
                s_z = sorted(s[z])[r]
                g = 1.0 if y[i] > y[z] else 0.0 if y[i] < y[z] else 0.5
                p = 1.0 if s[i, k] > s_z else 0.0 if s[i, k] < s_z else 0.5
                c = float(p == g)
                den = abs(y[i] - y[z]) + abs(s[i, k] - y[i]) + abs(s_z - y[z])
                if den == 0:
                    terms.append(1.0)
                    continue
                m = abs(y[i] - y[z]) / den
                terms.append(math.sqrt(c * m) + math.sqrt((1 - c) * (1 - m)))
            out[i, k] = np.mean(terms)
    return out


def literal_triplet_ranking(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Triplet-ranking term [B, K], one triple at a time."""
    batch, group = s.shape
    out = np.zeros_like(s)
    for i in range(batch):
        others = [j for j in range(batch) if j != i]
        for k in range(group):
            shares = []
            for a, b in itertools.combinations(others, 2):
                pairs = [(i, a), (a, b), (i, b)]
                shares.append(np.mean([(s[m, k] > s[n, k]) == (y[m] > y[n]) for m, n in pairs]))
            out[i, k] = np.mean(shares)
    return out
