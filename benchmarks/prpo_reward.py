"""Speed of the vectorised PRPO preference branch against the same formulas as loops, one run.

    python benchmarks/prpo_reward.py [--items 32] [--group 6] [--repeats 5]

Prints seconds per call of each and the speed-up. The reward actor scores a whole step's batch at
once (the preference branch compares every pair of items), so this is its cost per step.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from rewards.prpo import pairwise_score_rank, triplet_ranking
from rewards.prpo_literal import literal_pairwise, literal_triplet_ranking


def seconds(fn, *args, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    s = rng.uniform(1, 5, size=(args.items, args.group)).round(2)
    y = rng.uniform(1, 5, size=args.items)
    np.testing.assert_allclose(pairwise_score_rank(s, y), literal_pairwise(s, y))
    fast = seconds(pairwise_score_rank, s, y, repeats=args.repeats) + seconds(
        triplet_ranking, s, y, repeats=args.repeats
    )
    slow = seconds(literal_pairwise, s, y, repeats=args.repeats) + seconds(
        literal_triplet_ranking, s, y, repeats=args.repeats
    )
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print(f"B={args.items} K={args.group}: vectorised {fast * 1e3:.2f} ms, loops {slow * 1e3:.1f} ms, "
          f"speed-up {slow / fast:.0f}x")


if __name__ == "__main__":
    main()
