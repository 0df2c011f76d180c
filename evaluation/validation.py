"""Metrics of one labelled set from its predictions; validation during training uses `evaluate.py`'s path."""

from __future__ import annotations

import numpy as np

from evaluation.prediction import ItemPrediction, predict, prediction_summary
from evaluation.quality_metrics import quality_metrics
from rollouts.backend import SamplingSettings

PER_DATASET = ("srcc", "plcc", "scored", "items")  # what validation reports per dataset (val/<dataset>/<key>)


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


def evaluate(rollouts, items: list, load, task, sampling: SamplingSettings,
             batch_size: int) -> tuple[dict[str, float | None], list[ItemPrediction]]:
    """Validation during training: manifest items through the rollout actors (a RolloutGroup) -> set_metrics, and
    the predictions in the items' order.

    Items are loaded a chunk at a time by load(item) -> RolloutRequest; an unreadable one (MediaError) is
    counted, not scored. task: a function of the item ("iqa" | "vqa").
    """
    predictions = predict(rollouts, items, load, lambda item: item.item_id, task, sampling, batch_size)
    result = set_metrics(predictions, [item.mos for item in items])
    datasets = sorted({item.dataset for item in items})
    for name in datasets if len(datasets) > 1 else ():  # each dataset's own, as its benchmark reports it
        part = set_metrics([p for p, item in zip(predictions, items) if item.dataset == name],
                           [item.mos for item in items if item.dataset == name])
        result.update({f"{name}/{key}": part[key] for key in PER_DATASET})
    return result, predictions
