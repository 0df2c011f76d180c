"""The reward role: scores a step's answers with the PRPO reward, returning every component."""

from __future__ import annotations

import numpy as np

from rewards.prpo import PRPOWeights, format_reward, parse_answers, reward_components


class RewardWorker:
    """A plain class; Ray wraps it as an actor. Pure CPU work on parsed numbers."""

    def __init__(self, task: str, weights: PRPOWeights, format_weight: float = 1.0,
                 accuracy_weight: float = 1.0, preference_chunk: int | None = None):
        self.task, self.weights = task, weights
        self.format_weight, self.accuracy_weight = format_weight, accuracy_weight
        self.preference_chunk = preference_chunk

    def score(self, texts: list[list[str]], mos: list[float]) -> dict[str, np.ndarray]:
        """texts [B][K], mos [B] -> {"total", "accuracy", "format", each term, "vectors" [B, K, D]}, each [B, K]."""
        vectors = parse_answers(texts, self.task)
        parts = reward_components(vectors, np.asarray(mos), self.task, self.weights, self.preference_chunk)
        flat = [t for row in texts for t in row]
        parts["format"] = format_reward(flat, self.task).reshape(vectors.shape[:2])
        parts["total"] = self.accuracy_weight * parts["accuracy"] + self.format_weight * parts["format"]
        parts["vectors"] = vectors
        parts["prediction"] = vectors.mean(axis=-1)
        return parts
