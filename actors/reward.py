"""The reward role: scores a step's answers with the PRPO reward (rewards.prpo.batch_rewards)."""

from __future__ import annotations

import numpy as np

from rewards.prpo import ACCURACY_REWARDS, PRPOWeights, batch_rewards


class RewardWorker:
    """A plain class; Ray wraps it as an actor. Pure CPU work on parsed numbers."""

    def __init__(self, task: str, weights: PRPOWeights, format_weight: float = 1.0,
                 accuracy_weight: float = 1.0, preference_chunk: int | None = None, accuracy: str = "prpo"):
        if accuracy not in ACCURACY_REWARDS:
            raise ValueError(f"reward.accuracy {accuracy!r} is not one of {ACCURACY_REWARDS}")
        self.task, self.weights, self.accuracy = task, weights, accuracy
        self.format_weight, self.accuracy_weight = format_weight, accuracy_weight
        self.preference_chunk = preference_chunk

    def score(self, texts: list[list[str]], mos: list[float], tasks: list[str] | None = None) -> dict[str, np.ndarray]:
        """texts [B][K], mos [B], tasks [B] (default: the worker's task) -> every term and the total, each [B, K]."""
        if tasks is None:
            if self.task not in ("iqa", "vqa"):
                raise ValueError(f"reward task is {self.task!r}: give each item's task")
            tasks = [self.task] * len(texts)
        return batch_rewards(texts, mos, tasks, self.weights, self.format_weight, self.accuracy_weight,
                             self.preference_chunk, self.accuracy)
