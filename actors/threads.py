"""Each role on the cores it is given: torch's intra- and inter-op pools and the OpenMP/MKL pools sized from the
config (rollout.threads, learner.threads), so that roles working side by side (trainer.max_staleness 1) do not
each spread over every core of the node."""

from __future__ import annotations

import os

import torch


def pin_threads(threads: int) -> None:
    """Size this process's thread pools to `threads`. Called first thing in a role's actor."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # read by libraries that start their pools later
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # the inter-op pool already ran work in this process (an in-process test's second role)
            pass
