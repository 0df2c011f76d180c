"""GRPO advantages, KL estimators and the clipped loss on small tensors, against hand computation."""

import math

import pytest
import torch

from actors.grpo_objective import aggregate, group_advantages, grpo_loss, kl_penalty
from helpers import loss_options


def test_std_normalised_advantages():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    got = group_advantages(rewards, "grpo", eps=1e-4)
    # Group 0: mean 2, unbiased std 1. Group 1: all equal -> zero advantage, no NaN.
    torch.testing.assert_close(got, torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]) / torch.tensor([[1.0001], [1.0]]))


def test_drgrpo_advantages_are_only_centred():
    got = group_advantages(torch.tensor([[1.0, 2.0, 6.0]]), "drgrpo", 1e-4)
    torch.testing.assert_close(got, torch.tensor([[-2.0, -1.0, 3.0]]))


def test_unknown_estimator_is_named():
    with pytest.raises(ValueError, match="'ppo'"):
        group_advantages(torch.zeros(1, 2), "ppo", 1e-4)


def test_kl_estimators():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    r = math.log(0.5)  # log pi_ref - log pi
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(r) - r - 1)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(-r)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * r * r)
    assert kl_penalty(logp, ref, "none").item() == 0


def test_aggregations():
    values = torch.tensor([[1.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx((2.0 + 4.0) / 2)
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(8.0 / 3)


def test_loss_at_ratio_one_is_minus_advantage_plus_kl():
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.5], [0.5, 0.5]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = grpo_loss(logp, logp, ref, adv, mask, **loss_options(kl_coef=0.1))
    k3 = math.exp(math.log(0.5)) - math.log(0.5) - 1
    # Answer 0: tokens -1 + 0.1*k3 and -1 -> mean; answer 1: one token +1.
    expected = ((-1 + 0.1 * k3 - 1) / 2 + 1) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["kl"] == pytest.approx((k3 / 2 + 0) / 2)
    assert stats["clip_fraction"] == 0


def test_clipping_and_its_gradient():
    old = torch.zeros(2, 1)
    logp = torch.full((2, 1), math.log(1.5), requires_grad=True)
    mask = torch.ones(2, 1)
    loss, stats = grpo_loss(logp, old, None, torch.tensor([1.0, -1.0]), mask, **loss_options())
    # A = +1: min(1.5, 1.2) -> 1.2 (clipped, no gradient); A = -1: min(-1.5, -1.2) -> -1.5.
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert stats["clip_fraction"] == pytest.approx(0.5)
    loss.backward()
    assert logp.grad[0, 0].item() == 0
    assert logp.grad[1, 0].item() == pytest.approx(0.5 * 1.5)


def test_clip_higher_is_asymmetric():
    old = torch.zeros(1, 1)
    logp = torch.full((1, 1), math.log(1.25))
    loss, _ = grpo_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 1), **loss_options(clip_high=0.28))
    assert loss.item() == pytest.approx(-1.25)


def test_truncated_importance_weights_cap_and_reweight_the_policy_term():
    from actors.grpo_objective import rollout_importance_weights

    old = torch.log(torch.tensor([[0.5, 0.4, 0.9], [0.2, 0.2, 0.2]]))
    rollout = torch.log(torch.tensor([[0.5, 0.1, 0.3], [0.4, 0.2, 0.01]]))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    weights, stats = rollout_importance_weights(old, rollout, mask, cap=2.0)
    expected = torch.tensor([[1.0, 2.0, 2.0], [0.5, 1.0, 1.0]])  # 0.4/0.1 and 0.9/0.3 capped; masked -> 1
    assert torch.allclose(weights, expected, atol=1e-6)
    assert stats["is_capped"] == pytest.approx(2 / 5) and stats["is_weight"] == pytest.approx(6.5 / 5)
    logprobs = old.clone().requires_grad_(True)
    plain, _ = grpo_loss(logprobs, old, None, torch.tensor([1.0, -1.0]), mask, **loss_options(kl_coef=0.0))
    weighted, _ = grpo_loss(logprobs, old, None, torch.tensor([1.0, -1.0]), mask,
                            **loss_options(kl_coef=0.0, is_weights=weights))
    # ratio 1 everywhere: per-answer policy term is -A x mean weight over its tokens
    assert float(plain) == pytest.approx(0.0)
    assert float(weighted) == pytest.approx(((-1 * 5 / 3) + (1 * 1.5 / 2)) / 2)
