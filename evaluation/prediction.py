"""Scoring items through the rollout actors: one code path for validation, `evaluate.py` and `score.py`.

Items are loaded lazily, a chunk at a time, so a 10k-image set never sits in memory; answers are
parsed strictly (`rewards.answer_format.read_scores`): an unparseable answer is a counted failure, never a
substitute score.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from actors.groups import RolloutGroup, start_rollouts
from actors.placement import plan
from actors.ray_connection import connect_ray
from evaluation.readout import expected_scores
from launch.trainer.config import typed
from qadata.media import MediaError
from rewards.answer_format import read_scores, reasoning
from rollouts.backend import Completion, RolloutRequest, SamplingSettings

T = TypeVar("T")


@dataclass
class ItemPrediction:
    """One item's result. `score` is the mean over its parseable answers, on [1, 5]; None if none parsed.

    `aspects` [D] are the per-aspect means; `answers` are the raw completions; `error` names why the
    item was not scored at all (unreadable media). `readout_fallbacks`: scores the expected readout left greedy.
    """

    item_id: str
    score: float | None = None
    score_std: float | None = None
    aspects: list[float] | None = None
    reasoning: str | None = None
    answers: list[str] = field(default_factory=list)
    parsed: int = 0
    error: str | None = None
    readout_fallbacks: int = 0

    @property
    def failures(self) -> int:
        """Answers that did not parse."""
        return len(self.answers) - self.parsed

    def to_dict(self) -> dict:
        return asdict(self)


def start_scorers(cfg) -> RolloutGroup:
    """The rollout actors of a scoring config (evaluation/scoring_args.py), as training starts them: joins
    ray.address or RAY_ADDRESS's cluster, else starts a local Ray."""
    connect_ray(cfg.ray.address, cfg.ray.num_cpus or max(os.cpu_count() or 1, cfg.rollout.num_actors + 1))
    slots = plan("none", cfg.rollout.num_actors, 0, cfg.rollout.device != "cpu", 0, 0, 0).rollouts
    return start_rollouts(typed(cfg.model), typed(cfg.rollout), cfg.run.seed, slots)


def read_item(item_id: str, texts: list[str], task: str) -> ItemPrediction:
    """An item's n completions -> its prediction: mean and population std over the parseable ones."""
    vectors = [(text, read_scores(text, task)) for text in texts]
    good = [(text, v) for text, v in vectors if v is not None]
    out = ItemPrediction(item_id, answers=list(texts), parsed=len(good))
    if good:
        stacked = np.stack([v for _, v in good])  # [n, D]
        scores = stacked.mean(axis=1)
        out.score, out.score_std = float(scores.mean()), float(scores.std())
        out.aspects = [round(float(a), 4) for a in stacked.mean(axis=0)]
        out.reasoning = reasoning(good[0][0])
    return out


def read_expected(item_id: str, answer: Completion, task: str) -> ItemPrediction:
    """An item's greedy answer, read by the expected readout (evaluation/readout.py)."""
    vector, fallbacks = expected_scores(answer.text, answer.token_starts, answer.digit_logprobs, task)
    out = ItemPrediction(item_id, answers=[answer.text], parsed=int(vector is not None), readout_fallbacks=fallbacks)
    if vector is not None:
        out.score, out.score_std = float(vector.mean()), 0.0
        out.aspects = [round(float(a), 4) for a in vector]
        out.reasoning = reasoning(answer.text)
    return out


def predict(rollouts: RolloutGroup, items: Sequence[T], load: Callable[[T], RolloutRequest],
            item_id: Callable[[T], str],
            task: str | Callable[[T], str], sampling: SamplingSettings, batch_size: int, desc: str | None = None,
            on_chunk: Callable[[list[ItemPrediction]], None] | None = None) -> list[ItemPrediction]:
    """Predictions for `items` in order, through the rollout actors.

    `task` ("iqa" | "vqa", or a function of the item) says how each item's answers are parsed.
    `load` turns an item into a request (MediaError: the item is kept with its error, and the rest goes
    on). At most two chunks of `batch_size` items per actor are loaded at once. `on_chunk` sees each
    finished chunk (in order), e.g. to append it to a results file. A progress bar with ETA when `desc` (on a
    terminal).
    """
    chunks = [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    # A live bar on a terminal only: in a log file it is one line per redraw.
    bar = tqdm(total=len(items), desc=desc, unit="item", disable=desc is None or not sys.stderr.isatty(),
               dynamic_ncols=True)
    pending: deque = deque()  # (chunk index, loaded predictions/requests, future or None)
    results: list[ItemPrediction] = []
    next_chunk = 0

    def submit(index: int) -> None:
        loaded, requests = [], []
        for item in chunks[index]:
            try:
                request = load(item)
                loaded.append((request, task(item) if callable(task) else task))
                requests.append(request)
            except MediaError as error:
                loaded.append(ItemPrediction(item_id(item), error=str(error)))
        handle = rollouts.submit(index % len(rollouts), requests, sampling) if requests else None
        pending.append((loaded, handle))

    while next_chunk < len(chunks) and len(pending) < 2 * len(rollouts):
        submit(next_chunk)
        next_chunk += 1
    while pending:
        loaded, handle = pending.popleft()
        answers = iter(rollouts.result(handle) if handle is not None else [])
        done = []
        for entry in loaded:
            if isinstance(entry, ItemPrediction):
                done.append(entry)
            else:
                request, item_task = entry
                row = next(answers)
                done.append(read_expected(request.item_id, row[0], item_task) if sampling.digit_logprobs
                            else read_item(request.item_id, [c.text for c in row], item_task))
        if next_chunk < len(chunks):
            submit(next_chunk)
            next_chunk += 1
        results.extend(done)
        if on_chunk is not None:
            on_chunk(done)
        bar.update(len(done))
    bar.close()
    return results


def prediction_summary(predictions: list[ItemPrediction]) -> dict[str, float]:
    """Counts over a set's predictions: items, scored items, answer parse failures, unreadable media."""
    answers = sum(len(p.answers) for p in predictions)
    failures = sum(p.failures for p in predictions)
    stds = [p.score_std for p in predictions if p.score_std is not None]
    return {
        "items": float(len(predictions)),
        "scored": float(sum(p.score is not None for p in predictions)),
        "parse_failures": float(failures),
        "unparsed_items": float(sum(p.error is None and p.score is None for p in predictions)),
        "unreadable": float(sum(p.error is not None for p in predictions)),
        "parse_rate": float(1 - failures / answers) if answers else 0.0,
        "sample_std": float(np.mean(stds)) if stds else 0.0,
        "readout_fallbacks": float(sum(p.readout_fallbacks for p in predictions)),
    }
