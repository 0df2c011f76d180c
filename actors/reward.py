"""The reward role: scores a step's answers with the PRPO reward (rewards.prpo.batch_rewards)."""

from __future__ import annotations

import numpy as np

from rewards.prpo import ACCURACY_REWARDS, PRPOWeights, batch_rewards

# global: the preference branch compares across the step's whole batch; micro: within chunks of it
PREFERENCE_SCOPES = ("global", "micro")


class RewardWorker:
    """A plain class; Ray wraps it as an actor. Pure CPU work on parsed numbers.

    task: data.task (auto | iqa | vqa); reward: the config's `reward` section (RewardConfig)."""

    def __init__(self, task: str, reward):
        if reward.accuracy not in ACCURACY_REWARDS:
            raise ValueError(f"reward.accuracy {reward.accuracy!r} is not one of {ACCURACY_REWARDS}")
        self.task, self.weights, self.accuracy = task, PRPOWeights.from_config(reward), reward.accuracy
        self.format_weight, self.accuracy_weight = reward.format_weight, reward.accuracy_weight
        # One actor scores a step's batch: the preference branch compares across all of it, or within chunks.
        self.preference_chunk = reward.preference_chunk if reward.preference_scope == "micro" else None

    def score(self, texts: list[list[str]], mos: list[float], tasks: list[str] | None = None) -> dict[str, np.ndarray]:
        """texts [B][K], mos [B], tasks [B] (default: the worker's task) -> every term and the total, each [B, K]."""
        if tasks is None:
            if self.task not in ("iqa", "vqa"):
                raise ValueError(f"reward task is {self.task!r}: give each item's task")
            tasks = [self.task] * len(texts)
        return batch_rewards(texts, mos, tasks, self.weights, self.format_weight, self.accuracy_weight,
                             self.preference_chunk, self.accuracy)
