"""Dynamic sampling's sieve and refill, and the variance weights: the real reward, a scripted answer source."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from actors.grpo_objective import informative_groups, variance_weights
from actors.reward import RewardWorker
from helpers import base_config, reward_section
from launch.trainer.dynamic_sampling import refilled
from qadata.sampler import BatchSampler
from rewards.answer_format import format_answer
from rollouts.backend import Completion, RolloutRequest

G = 4


class Items:
    """Training items 0..n-1 with MOS 1 + i / n; even items are answered alike G times (a flat group)."""

    def __init__(self, n: int, flat=lambda i: i % 2 == 0):
        self.n, self.flat, self.generated = n, flat, []

    def batch(self, sampler, size):
        indices = sampler.take(size)
        return [RolloutRequest(str(i), [], [], "iqa") for i in indices], [1.0 + 4 * i / self.n for i in indices]

    def generate(self, requests, sampling):
        self.generated.append((len(requests), sampling.seed))
        return [[Completion([1, 2], format_answer("x", [3.0 if self.flat(int(r.item_id)) else 1.0 + k] * 5))
                 for k in range(G)] for r in requests]


class Reward:
    def __init__(self):
        self.worker = RewardWorker(reward_section())

    def score(self, answers, mos, tasks, reward=None, datasets=None):
        return self.worker.score([[c.text for c in row] for row in answers], mos, tasks, reward, datasets)


def stand_in_run(items: Items, min_std: float, max_extra: int):
    cfg = base_config("reward.accuracy=absolute_error", f"algorithm.dynamic_sampling.min_reward_std={min_std}",
                      f"algorithm.dynamic_sampling.max_extra_items={max_extra}")
    sampler = BatchSampler(items.n, 0)
    return SimpleNamespace(cfg=cfg, sampler=sampler, data=items, roles=SimpleNamespace(rollouts=items, reward=Reward()),
                           sampling=lambda step, round_=0: SimpleNamespace(seed=1000 * step + round_),
                           stage=lambda step: SimpleNamespace(cfg=cfg),
                           draw=lambda step, size: items.batch(sampler, size))


def first_round(run, size):
    requests, mos = run.data.batch(run.sampler, size)
    return requests, mos, run.data.generate(requests, run.sampling(7))


def test_flat_groups_give_way_to_the_next_items_until_the_batch_is_whole():
    items = Items(40)
    run = stand_in_run(items, 1e-6, 16)
    requests, mos, answers, refill = refilled(run, 7, *first_round(run, 8))
    assert len(requests) == len(mos) == len(answers) == 8
    assert all(int(r.item_id) % 2 == 1 for r in requests)  # every group kept differs
    assert mos == [1.0 + 4 * int(r.item_id) / 40 for r in requests]  # MOS stay with their items
    assert refill.shortfall == 0 and refill.padded == 0 and refill.flat_groups == refill.extra_items
    assert run.sampler.state()["position"] == 8 + refill.extra_items
    assert [seed for _, seed in items.generated] == [7000 + r for r in range(refill.rounds + 1)]


def test_a_refill_that_hits_its_bound_pads_what_is_missing_and_counts_it():
    items = Items(40, flat=lambda i: i % 4 != 0)  # a quarter of the groups differ
    run = stand_in_run(items, 1e-6, 4)
    requests, mos, answers, refill = refilled(run, 1, *first_round(run, 8))
    assert refill.extra_items == 4 and run.sampler.state()["position"] == 12
    informative = sum(not any(c.skipped for c in row) for row in answers)
    assert refill.shortfall == refill.padded == 8 - informative > 0
    padded = answers[informative:]
    assert all(c.skipped and not c.token_ids for row in padded for c in row)  # learned from as a skipped prompt is
    assert len(requests) == 8 and len(padded[0]) == G


def test_when_no_group_differs_the_first_batch_is_trained_on_as_it_came():
    items = Items(40, flat=lambda i: True)
    run = stand_in_run(items, 1e-6, 4)
    first = first_round(run, 8)
    requests, _, answers, refill = refilled(run, 1, *first)
    assert requests == first[0] and answers == first[2]
    assert refill.shortfall == 8 and refill.padded == 0 and refill.extra_items == 4 and refill.flat_groups == 12


def test_informative_groups_and_variance_weights():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.5, 1.0], [2.0, 2.0, 2.0 + 1e-9]])
    assert informative_groups(rewards, 1e-6).tolist() == [False, True, False]
    predictions = torch.tensor([[3.0, 3.0, 3.0], [2.0, 4.0, 3.0], [2.5, 3.5, 3.0]])
    weights = variance_weights(predictions, 2.0)
    assert weights[0] == 1.0 and weights[1] == pytest.approx(np.exp(-2.0)) and weights[2] == pytest.approx(np.exp(-0.5))
    assert variance_weights(predictions, 0.0).tolist() == [1.0, 1.0, 1.0]
    assert variance_weights(torch.full((2, 3), 3.0), 2.0).tolist() == [1.0, 1.0]
