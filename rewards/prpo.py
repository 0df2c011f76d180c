"""The PreResQ-R1 reward (PRPO): a response branch and a preference branch, plus format.

Every function is a pure, vectorised function of numpy arrays. Shapes:
B items (images or videos), K answers per item (the GRPO group), D numbers per answer
(5 for IQA, 2 for VQA). Scores and MOS are on the [1, 5] scale.
The formulas follow ALGORITHM.md term by term, with the edge rules stated there.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from rewards.absolute_error import absolute_error_reward
from rewards.answer_format import answer_dims, parse_answers, read_scores, well_formed

# Dimensions that the triplet-balance term looks at (IQA ignores "background").
BALANCE_DIMS = {"iqa": 4, "vqa": 2}


# Constants of the method's formulas (ALGORITHM.md), not options: the paper does not tune them.
BALANCE_TOLERANCE = 0.05  # an end of a triplet "near" its middle
EXACT_TOLERANCE = 0.02  # rank_to_mos: a prediction this close to the MOS counts as exact
BALANCE_SCALE = 0.5  # the triplet-balance term enters the response branch at half weight
IQA_DIVISOR = 3.0  # IQA accuracy = (response + preference) / 3


@dataclass(frozen=True)
class PRPOWeights:
    """The reward's tunable weights; their values live in configs/base.yaml (`reward:`)."""

    std_margin: float
    std_penalty: float  # lambda_std
    triplet_balance: float  # lambda_tri
    rank_to_mos: float  # lambda_rank (IQA only)
    pairwise: float
    triplet_ranking: float

    @classmethod
    def from_config(cls, reward) -> PRPOWeights:
        """The weights of a validated config's `reward` section."""
        return cls(**{name: getattr(reward, name) for name in cls.__dataclass_fields__})


def format_reward(texts: list[str], task: str) -> np.ndarray:
    """1.0 where the completion is well formed (rewards.answer_format.well_formed), else 0.0."""
    return np.asarray([1.0 if well_formed(t, task) else 0.0 for t in texts], dtype=np.float64)


# ----------------------------------------------------------------------------- response branch


def std_penalty(vectors: np.ndarray, weights: PRPOWeights) -> np.ndarray:
    """[B, K, D] -> [B, K]: lambda_std * max(0, m - population std over the D numbers)."""
    return weights.std_penalty * np.maximum(0.0, weights.std_margin - vectors.std(axis=-1))


def triplet_balance(vectors: np.ndarray, task: str, weights: PRPOWeights) -> np.ndarray:
    """[B, K, D] -> T [B, K] in [0, 1]; zero when K < 3.

    Over every 3-subset of an item's answers and each balance dimension, the middle value gains 1
    and each end gains 1 if strictly within the tolerance of the middle.
    """
    batch, group, _ = vectors.shape
    if group < 3:
        return np.zeros((batch, group))
    dims = BALANCE_DIMS[task]
    triples = np.asarray(list(itertools.combinations(range(group), 3)))  # [T, 3]
    values = vectors[:, triples, :dims]  # [B, T, 3, D']
    order = np.argsort(values, axis=2, kind="stable")  # ascending; ties keep answer order
    ordered = np.take_along_axis(values, order, axis=2)
    middle = ordered[:, :, 1:2, :]
    gain_by_position = np.ones_like(ordered)
    gain_by_position[:, :, [0, 2], :] = np.abs(ordered[:, :, [0, 2], :] - middle) < BALANCE_TOLERANCE
    answer_of_position = np.take_along_axis(
        np.broadcast_to(triples[None, :, :, None], values.shape), order, axis=2
    )
    gains = np.zeros((batch, group))
    batch_index = np.broadcast_to(np.arange(batch)[:, None, None, None], values.shape)
    np.add.at(gains, (batch_index, answer_of_position), gain_by_position)
    triples_per_answer = math.comb(group - 1, 2)
    return gains / (triples_per_answer * dims)


def rank_to_mos(predictions: np.ndarray, mos: np.ndarray, weights: PRPOWeights) -> np.ndarray:
    """[B, K], [B] -> [B, K]: 1 if within 0.02 of the MOS, else exp(-|rank gap| / (K + 1)).

    Ranks are positions in the ascending sort of [s_1..s_K, y]; equal values share the rank of
    their first occurrence, i.e. the count of strictly smaller values.
    """
    group = predictions.shape[1]
    pooled = np.concatenate([predictions, mos[:, None]], axis=1)  # [B, K+1]
    rank = (pooled[:, None, :] < pooled[:, :, None]).sum(axis=-1)  # [B, K+1]
    gap = np.abs(rank[:, :group] - rank[:, group:])
    term = np.exp(-gap / (group + 1))
    return np.where(np.abs(predictions - mos[:, None]) < EXACT_TOLERANCE, 1.0, term)


# ----------------------------------------------------------------------------- preference branch


def _order_indicator(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 if a > b, 0 if a < b, 0.5 if equal."""
    return np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))


def pairwise_score_rank(predictions: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """[B, K], [B] -> [B, K]: agreement of rank-matched predictions with MOS order across items.

    Item i's r-th smallest prediction is compared with the r-th smallest of every other item;
    the mean over the others goes back to the answer that held rank r. With B = 1 it is 0.
    """
    batch, group = predictions.shape
    if batch < 2:
        return np.zeros((batch, group))
    order = np.argsort(predictions, axis=1, kind="stable")
    ranked = np.take_along_axis(predictions, order, axis=1)  # [B, K]
    s_i, s_z = ranked[:, None, :], ranked[None, :, :]  # [B, 1, K], [1, B, K]
    y_i, y_z = mos[:, None, None], mos[None, :, None]
    truth = _order_indicator(y_i, y_z)
    said = _order_indicator(s_i, s_z)
    correct = (said == truth).astype(np.float64)
    mos_gap = np.abs(y_i - y_z)
    denominator = mos_gap + np.abs(s_i - y_i) + np.abs(s_z - y_z)
    margin = np.divide(mos_gap, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    term = np.sqrt(correct * margin) + np.sqrt((1.0 - correct) * (1.0 - margin))
    term = np.where(denominator > 0, term, 1.0)  # 0/0: equal MOS and both exact
    others = ~np.eye(batch, dtype=bool)[:, :, None]
    by_rank = (term * others).sum(axis=1) / (batch - 1)  # [B, K]
    out = np.empty_like(by_rank)
    np.put_along_axis(out, order, by_rank, axis=1)
    return out


def triplet_ranking(predictions: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """[B, K], [B] -> Q [B, K] in [0, 1]; 0 when B < 3.

    For answer k of item i and each pair a < b of other items, the share of the orders
    (i, a), (a, b), (i, b) whose strict predicted order 1[s_m > s_n] equals 1[y_m > y_n].
    """
    batch, group = predictions.shape
    if batch < 3:
        return np.zeros((batch, group))
    said = predictions[:, None, :] > predictions[None, :, :]  # [B, B, K]: s_m > s_n
    truth = (mos[:, None] > mos[None, :])[:, :, None]
    agree = (said == truth).astype(np.float64)  # agree[m, n, k] for the ordered pair (m, n)
    eye = np.eye(batch, dtype=bool)[:, :, None]
    # Pairs that include i: each other item a sits in B-2 pairs with i first.
    with_i = (agree * ~eye).sum(axis=1) * (batch - 2)  # [B, K]
    upper = np.triu(np.ones((batch, batch), dtype=bool), k=1)[:, :, None]
    all_pairs = (agree * upper).sum(axis=(0, 1))  # [K]: sum over a < b
    touching_i = (agree * upper).sum(axis=1) + (agree * upper).sum(axis=0)  # [B, K]
    without_i = all_pairs[None, :] - touching_i
    pairs = math.comb(batch - 1, 2)
    return (with_i + without_i) / (3.0 * pairs)


# ----------------------------------------------------------------------------- combination


def reward_components(
    vectors: np.ndarray,
    mos: np.ndarray,
    task: str,
    weights: PRPOWeights,
    preference_group: int | None = None,
) -> dict[str, np.ndarray]:
    """Every term of the accuracy reward, each [B, K], plus the two branches and "accuracy".

    accuracy = (response + preference) / 3 for IQA and response + preference for VQA.

    `preference_group`: compare items for the preference branch within consecutive chunks of
    this many items (the reference's per-GPU micro-batch); None compares across the whole batch.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if vectors.ndim != 3 or vectors.shape[-1] != answer_dims(task):
        raise ValueError(f"scores must be [B, K, {answer_dims(task)}] for {task}, got {vectors.shape}")
    if mos.shape != vectors.shape[:1]:
        raise ValueError(f"mos must be [B] = {vectors.shape[:1]}, got {mos.shape}")
    predictions = vectors.mean(axis=-1)
    chunk = preference_group or len(mos)
    pairwise = np.concatenate(
        [pairwise_score_rank(predictions[i : i + chunk], mos[i : i + chunk]) for i in range(0, len(mos), chunk)]
    )
    ranking = np.concatenate(
        [triplet_ranking(predictions[i : i + chunk], mos[i : i + chunk]) for i in range(0, len(mos), chunk)]
    )
    parts = {
        "std_penalty": std_penalty(vectors, weights),
        "triplet_balance": triplet_balance(vectors, task, weights),
        "pairwise": pairwise,
        "triplet_ranking": ranking,
    }
    balance = BALANCE_SCALE * weights.triplet_balance * parts["triplet_balance"]
    parts["response"] = balance - parts["std_penalty"]
    parts["preference"] = weights.pairwise * parts["pairwise"] + weights.triplet_ranking * parts["triplet_ranking"]
    if task == "iqa":
        parts["rank_to_mos"] = rank_to_mos(predictions, mos, weights)
        parts["response"] = parts["response"] + weights.rank_to_mos * parts["rank_to_mos"]
        parts["accuracy"] = (parts["response"] + parts["preference"]) / IQA_DIVISOR
    else:
        parts["accuracy"] = parts["response"] + parts["preference"]
    return parts


# The accuracy rewards a run may use: prpo (the two branches above) | absolute_error (the plain score
# reward, for the ablation).
ACCURACY_REWARDS = ("prpo", "absolute_error")


@dataclass
class BatchRewards:
    """A step's answers scored: `terms` holds every reward term and "total", each [B, K]; beside them what the
    answers said: `predictions` [B, K] (mean of the parsed numbers) and `parsed` [B, K] (1.0 where evaluation's
    strict reader gets the scores)."""

    terms: dict[str, np.ndarray]
    predictions: np.ndarray
    parsed: np.ndarray


def batch_rewards(texts: list[list[str]], mos, tasks: list[str], weights: PRPOWeights, format_weight: float,
                  accuracy_weight: float, preference_group: int | None, accuracy: str,
                  datasets: list[str] | None = None) -> BatchRewards:
    """One step's answers texts [B][K], MOS [B] and each item's task [B] -> every term and the total.

    The terms are "total", "accuracy", "format" and every PRPO term. A batch that mixes tasks is scored per task,
    so the preference branch compares images with images and videos with videos; a term one task does not have
    (rank_to_mos for VQA) is 0 on its rows. With each item's dataset [B], it compares within each dataset only
    (MOS scales of two datasets need not agree).
    """
    if accuracy not in ACCURACY_REWARDS:
        raise ValueError(f"reward.accuracy {accuracy!r} is not one of {ACCURACY_REWARDS}")
    mos = np.asarray(mos, dtype=np.float64)
    shape = (len(texts), len(texts[0]) if texts else 0)
    terms: dict[str, np.ndarray] = {}
    predictions, parsed = np.zeros(shape), np.zeros(shape)
    labels = [f"{task}\0{dataset}" for task, dataset in zip(tasks, datasets or [""] * len(tasks))]
    for label in sorted(set(labels)):
        task = label.split("\0")[0]
        rows = np.flatnonzero(np.asarray(labels) == label)
        group = [texts[i] for i in rows]
        vectors = parse_answers(group, task)
        parts = reward_components(vectors, mos[rows], task, weights, preference_group)
        parts["format"] = format_reward([t for row in group for t in row], task).reshape(vectors.shape[:2])
        parsed[rows] = [[read_scores(t, task) is not None for t in row] for row in group]
        predictions[rows] = vectors.mean(axis=-1)
        if accuracy == "absolute_error":
            parts["accuracy"] = absolute_error_reward(predictions[rows], mos[rows])
        for key, value in parts.items():
            terms.setdefault(key, np.zeros(shape))[rows] = value
    terms["total"] = accuracy_weight * terms["accuracy"] + format_weight * terms["format"]
    return BatchRewards(terms, predictions, parsed)
