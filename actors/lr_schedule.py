"""The learning rate of each step: linear warm-up, then constant or cosine decay to a floor."""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def learning_rate(step: int, base: float, total_steps: int, schedule: str, warmup_steps: int, min_ratio: float,
                  scale: float) -> float:
    """lr of update `step` (1-based) of `total_steps`; `scale` is the health guard's cut after rollbacks."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"learning-rate schedule {schedule!r} is not one of {LR_SCHEDULES}")
    if warmup_steps and step <= warmup_steps:
        return base * scale * step / warmup_steps
    if schedule == "constant":
        return base * scale
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base * scale * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
