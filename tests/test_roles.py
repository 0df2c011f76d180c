"""The roles in-process (no Ray): rollout answers, a learner step that moves log-probs the way the
advantage says, and a weight update after which the rollout generates with the learner's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.learner import LearnerRank, LearnerSettings, TrainSample
from actors.reward import RewardWorker
from helpers import local_config, reward_section, rollout_worker, sampling
from models.sequences import completion_logprobs
from models.weights import sample_checksums, weights_digest
from qadata.manifest import items, read_manifest
from qadata.media import load_image
from rewards.answer_format import chat_messages
from rollouts.backend import RolloutRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def requests_(generated_data):
    chosen = items(read_manifest(generated_data), "train")[::40][:4]
    return [RolloutRequest(i.item_id, [load_image(i.path)], chat_messages("iqa", 1), "iqa") for i in chosen], [
        i.mos for i in chosen
    ]


def learner_config(tiny_model, *overrides):
    """A learner at T 1 and lr 1e-3 without the KL term, so one step moves the tiny model measurably."""
    return local_config(tiny_model, "rollout.temperature=1.0", "learner.lr=1e-3", "algorithm.kl_coef=0.0", *overrides)


@pytest.fixture(scope="module")
def learner(tiny_model):
    # 3 answers a step in one micro-batch
    cfg = learner_config(tiny_model, "trainer.batch_size=1", "rollout.group_size=3", "learner.micro_batch=3")
    rank = LearnerRank(LearnerSettings.from_config(cfg), 0, 1)
    rank.setup("127.0.0.1", 29731)
    return rank


def test_rollout_answers_g_times_with_logprobs(tiny_model, requests_):
    worker = rollout_worker(tiny_model)
    requests, _ = requests_
    answers = worker.generate(requests, sampling(n=3, max_new_tokens=16, seed=0))
    assert [len(row) for row in answers] == [3] * len(requests)
    for row in answers:
        for c in row:
            assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
    # Sampling log-probs agree with a fresh forward pass of the same model (same temperature).
    c = answers[0][0]
    prompts = worker.backend.processor.encode([requests[0].messages], [requests[0].images])
    logprobs, _, _ = completion_logprobs(worker.backend.model, prompts, [c.token_ids], worker.backend.processor.pad_id,
                                      1.0)
    torch.testing.assert_close(logprobs[0], torch.tensor(c.logprobs), atol=1e-4, rtol=0)
    texts = [[a.text for a in row] for row in answers]
    scored = RewardWorker(reward_section()).score(texts, requests_[1], [r.task for r in requests])
    assert scored.terms["total"].shape == (len(requests), 3)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_learner_step_follows_the_advantage(learner, requests_, sign):
    request = requests_[0][0]
    # A completion the warmed-up model finds unlikely, so one step moves it measurably.
    tokens = learner.processor.tokenizer("<answer>soft vivid dim</answer><think>")["input_ids"]

    def logprobs() -> torch.Tensor:
        probe = TrainSample(request.images, request.messages, tokens, sign, [0.0] * len(tokens), 0)
        with torch.no_grad():
            lp, _, mask = completion_logprobs(learner.engine.module, learner._encode([probe]), [tokens],
                                              learner.processor.pad_id, learner.settings.temperature)
        return lp[0][mask[0].bool()]

    def logprob() -> float:
        return float(logprobs().sum())

    # On-policy: the sampling log-probs are the current ones (importance ratio 1).
    samples = [TrainSample(request.images, request.messages, tokens, sign, logprobs().tolist(), 0)] * 3
    # A padded place (a skipped prompt, or dynamic sampling's shortfall): no tokens, advantage 0.
    samples.append(TrainSample(requests_[0][1].images, requests_[0][1].messages, [], 0.0, [], 1))
    before = logprob()
    stats = learner.train_step(samples, learner.settings.lr)
    after = logprob()
    assert stats["tokens"] == 3 * len(tokens)
    assert (after - before) * sign > 0.1


def test_rollout_generates_with_the_synced_weights(tiny_model, learner, requests_):
    worker = rollout_worker(tiny_model)
    weights = learner.full_weights()
    assert worker.weights_digest() != weights_digest(weights)  # the learner has stepped
    assert worker.load_weights(weights, version=7) == sample_checksums(weights)  # what it holds after loading
    assert worker.weights_digest() == weights_digest(weights)
    request = requests_[0][0]
    answer = worker.generate([request], sampling(n=1, greedy=True, max_new_tokens=12))[0][0]
    prompts = learner._encode([TrainSample(request.images, request.messages, [], 0.0, [], 0)])
    with torch.no_grad():
        expected = learner.engine.module.generate(
            **prompts, do_sample=False, max_new_tokens=12, eos_token_id=learner.processor.eos_ids,
            pad_token_id=learner.processor.pad_id, suppress_tokens=learner.processor.vision_ids,
        )
    assert answer.token_ids == expected[0, prompts["input_ids"].shape[1]:].tolist()[: len(answer.token_ids)]


def test_a_poisoned_micro_batch_is_not_applied_and_counted(tiny_model, requests_):
    """Two micro-batches of 2 answers (DeepSpeed ZeRO-2 accumulating over both), one with a NaN advantage."""
    cfg = learner_config(tiny_model, "trainer.batch_size=2", "rollout.group_size=2", "learner.micro_batch=2")
    rank = LearnerRank(LearnerSettings.from_config(cfg), 0, 1)
    rank.setup("127.0.0.1", 29733)
    request = requests_[0][0]
    tokens = rank.processor.tokenizer("<think>soft</think><answer>\n3.00\n</answer>")["input_ids"]

    def batch(*advantages):
        return [TrainSample(request.images, request.messages, tokens, a, [0.0] * len(tokens), 0) for a in advantages]

    start = weights_digest(rank.full_weights())
    stats = rank.train_step(batch(float("nan"), 1.0, float("inf"), -1.0), rank.settings.lr)
    assert stats["nonfinite"] == 1.0 and stats["applied"] == 0.0
    assert weights_digest(rank.full_weights()) == start  # Adam's momentum did not move the weights either

    stats = rank.train_step(batch(1.0, -1.0, float("nan"), 0.5), rank.settings.lr)
    weights = rank.full_weights()
    assert stats["nonfinite"] == 0.5 and stats["applied"] == 1.0 and np.isfinite(stats["loss"])
    assert stats["grad_norm"] > 0 and weights_digest(weights) != start
    assert all(torch.isfinite(t).all() for t in weights.values())
