"""Validation during training: greedy (or mean-of-n) answers on held-out items -> SRCC / PLCC."""

from __future__ import annotations

import numpy as np
import ray
from scipy import stats

from rewards.prpo import format_reward, parse_answers
from rollouts.backend import SamplingSettings


def correlations(predictions: np.ndarray, mos: np.ndarray) -> dict[str, float | None]:
    """SRCC and PLCC; None where undefined (fewer than 2 items, or a constant side)."""
    if len(mos) < 2 or np.ptp(predictions) == 0 or np.ptp(mos) == 0:
        return {"srcc": None, "plcc": None}
    return {
        "srcc": float(stats.spearmanr(predictions, mos).statistic),
        "plcc": float(stats.pearsonr(predictions, mos).statistic),
    }


def evaluate(rollouts: list, requests: list, mos: list[float], task: str, greedy: bool, samples: int,
             max_new_tokens: int, batch_size: int, temperature: float = 1.0, seed: int = 0) -> dict[str, float | None]:
    """Answers for every request through the rollout actors; metrics on the [1, 5] scale.

    Greedy, or the mean of `samples` answers at `temperature` per item. Unparseable answers count
    in `parse_failures` and keep the reference parser's value.
    """
    sampling = SamplingSettings(
        n=1 if greedy else samples, greedy=greedy, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
    )
    chunks = [requests[i : i + batch_size] for i in range(0, len(requests), batch_size)]
    futures = [rollouts[i % len(rollouts)].generate.remote(chunk, sampling) for i, chunk in enumerate(chunks)]
    answers = [row for part in ray.get(futures) for row in part]
    texts = [[c.text for c in row] for row in answers]
    predictions = parse_answers(texts, task).mean(axis=-1).mean(axis=-1)  # [B]
    formatted = format_reward([t for row in texts for t in row], task)
    mos_array = np.asarray(mos, dtype=np.float64)
    out = correlations(predictions, mos_array)
    out.update(
        n=float(len(mos)),
        parse_failures=float((formatted == 0).sum()),
        prediction_mean=float(predictions.mean()),
        prediction_std=float(predictions.std()),
        mae=float(np.abs(predictions - mos_array).mean()),
    )
    return out
