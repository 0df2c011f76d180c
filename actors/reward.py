"""The reward role: scores a step's answers with the PRPO reward, returning every component."""

from __future__ import annotations

import numpy as np

from rewards.absolute_error import absolute_error_reward
from rewards.prpo import PRPOWeights, format_reward, parse_answers, read_scores, reward_components


# prpo: the two branches (rewards/prpo.py); absolute_error: the plain score reward, for the ablation
ACCURACY_REWARDS = ("prpo", "absolute_error")


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
        """texts [B][K], mos [B] -> {"total", "accuracy", "format", "parsed", "prediction", each term}, each [B, K].

        "parsed" is 1 where evaluation's strict reader gets the scores (rewards.prpo.read_scores).

        `tasks` [B] ("iqa" | "vqa"; default: the worker's task): a mixed batch is scored per task, so
        the preference branch compares images with images and videos with videos. A term that one
        task does not have (rank_to_mos for VQA) is 0 on its rows.
        """
        if tasks is None:
            if self.task not in ("iqa", "vqa"):
                raise ValueError(f"reward task is {self.task!r}: give each item's task")
            tasks = [self.task] * len(texts)
        mos = np.asarray(mos, dtype=np.float64)
        out: dict[str, np.ndarray] = {}
        for task in sorted(set(tasks)):
            rows = np.flatnonzero(np.asarray(tasks) == task)
            group = [texts[i] for i in rows]
            vectors = parse_answers(group, task)
            parts = reward_components(vectors, mos[rows], task, self.weights, self.preference_chunk)
            parts["format"] = format_reward([t for row in group for t in row], task).reshape(vectors.shape[:2])
            parts["parsed"] = np.asarray([[read_scores(t, task) is not None for t in row] for row in group], float)
            parts["prediction"] = vectors.mean(axis=-1)
            if self.accuracy == "absolute_error":
                parts["accuracy"] = absolute_error_reward(parts["prediction"], mos[rows])
            for key, value in parts.items():
                out.setdefault(key, np.zeros((len(texts), vectors.shape[1])))[rows] = value
        out["total"] = self.accuracy_weight * out["accuracy"] + self.format_weight * out["format"]
        return out
