"""The reward role: scores a step's answers with the PRPO reward (rewards.prpo.batch_rewards)."""

from __future__ import annotations

from rewards.prpo import ACCURACY_REWARDS, BatchRewards, PRPOWeights, batch_rewards

# global: the preference branch compares across the step's whole batch; micro: within chunks of it; dataset:
# within each dataset of it
PREFERENCE_SCOPES = ("global", "micro", "dataset")


class RewardWorker:
    """A plain class; Ray wraps it as an actor. Pure CPU work on parsed numbers.

    reward: the config's `reward` section (RewardConfig)."""

    def __init__(self, reward):
        if reward.accuracy not in ACCURACY_REWARDS:
            raise ValueError(f"reward.accuracy {reward.accuracy!r} is not one of {ACCURACY_REWARDS}")
        self.weights, self.accuracy = PRPOWeights.from_config(reward), reward.accuracy
        self.format_weight, self.accuracy_weight = reward.format_weight, reward.accuracy_weight
        # One actor scores a step's batch: the preference branch compares across all of it, or within chunks.
        self.preference_chunk = reward.preference_chunk if reward.preference_scope == "micro" else None
        self.by_dataset = reward.preference_scope == "dataset"

    def score(self, texts: list[list[str]], mos: list[float], tasks: list[str], reward=None,
              datasets: list[str] | None = None) -> BatchRewards:
        """texts [B][K], mos [B], each item's task [B] (iqa | vqa) and dataset [B] -> the answers' rewards and
        scores; `reward`: a `reward` section to score with instead of this worker's (a stage may change it)."""
        if reward is not None:
            return RewardWorker(reward).score(texts, mos, tasks, None, datasets)
        return batch_rewards(texts, mos, tasks, self.weights, self.format_weight, self.accuracy_weight,
                             self.preference_chunk, self.accuracy, datasets if self.by_dataset else None)
