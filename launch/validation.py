"""Metrics of one labelled set from its predictions; validation during training uses `evaluate.py`'s path."""

from __future__ import annotations

import numpy as np

from launch.prediction import ItemPrediction, predict, prediction_summary
from launch.quality_metrics import quality_metrics
from rollouts.backend import SamplingSettings


def eval_sampling(greedy: bool, samples: int, max_new_tokens: int, temperature: float, seed: int) -> SamplingSettings:
    """Greedy (one answer per item) or `samples` answers at `temperature`."""
    return SamplingSettings(n=1 if greedy else samples, greedy=greedy, max_new_tokens=max_new_tokens,
                            temperature=temperature, seed=seed)


def set_metrics(predictions: list[ItemPrediction], mos: list[float]) -> dict[str, float | None]:
    """quality_metrics over the scored items, plus the counts of `prediction_summary`.

    Items that failed (unparseable answers, unreadable media) are left out of the correlations and
    counted, never given a substitute score.
    """
    scored = [(p.score, m) for p, m in zip(predictions, mos) if p.score is not None]
    x = np.array([s for s, _ in scored], dtype=float)
    y = np.array([m for _, m in scored], dtype=float)
    out = quality_metrics(x, y)
    out.update(prediction_summary(predictions))
    out["prediction_mean"] = float(x.mean()) if len(x) else None
    out["prediction_std"] = float(x.std()) if len(x) else None
    return out


def evaluate(rollouts: list, requests: list, mos: list[float], task: str | list[str], greedy: bool, samples: int,
             max_new_tokens: int, batch_size: int, temperature: float = 1.0, seed: int = 0) -> dict[str, float | None]:
    """Validation during training: already-loaded requests through the rollout actors -> set_metrics.

    task: one for all requests, or one per request.
    """
    sampling = eval_sampling(greedy, samples, max_new_tokens, temperature, seed)
    per_request = dict(zip((r.item_id for r in requests), task)) if isinstance(task, list) else None
    predictions = predict(rollouts, requests, lambda r: r, lambda r: r.item_id,
                          (lambda r: per_request[r.item_id]) if per_request else task, sampling, batch_size)
    return set_metrics(predictions, mos)
