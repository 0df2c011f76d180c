"""GRPO as pure tensor functions: group advantages, per-token KL, and the clipped policy loss.

Shapes: rewards [B, K] (B items, K answers each); per-token tensors [N, T] with N answers and a
mask [N, T] that is 1 on completion tokens. Log-probs are natural logs.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3", "none")
LOSS_AGGREGATIONS = ("seq-mean-token-mean", "token-mean")
ADVANTAGE_ESTIMATORS = ("grpo", "drgrpo")
ROLLOUT_IS = ("none", "truncated")  # importance weights against the rollout engine's log-probs


def group_advantages(rewards: torch.Tensor, estimator: str, eps: float) -> torch.Tensor:
    """[B, K] -> [B, K]. grpo: (R - mean) / (unbiased std + eps) per group; drgrpo: R - mean."""
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"advantage estimator {estimator!r} is not one of {ADVANTAGE_ESTIMATORS}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if estimator == "drgrpo":
        return centred
    std = rewards.std(dim=1, keepdim=True, unbiased=True) if rewards.shape[1] > 1 else torch.zeros_like(centred)
    return centred / (std + eps)


def informative_groups(rewards: torch.Tensor, min_std: float) -> torch.Tensor:
    """[B, K] -> [B] bool: the groups whose rewards differ (std above `min_std`). A group of (nearly) equal
    rewards has advantage ~0 for every answer and carries no policy gradient (dynamic sampling drops it)."""
    spread = rewards.std(dim=1, unbiased=False) if rewards.shape[1] > 1 else torch.zeros(rewards.shape[0])
    return spread > min_std


def variance_weights(predictions: torch.Tensor, alpha: float) -> torch.Tensor:
    """[B, K] predicted scores -> [B] weights exp(-alpha * var / max var) (Q-Hawkeye): an item whose answers
    disagree on its score gets a smaller step. alpha 0 (or every variance 0): all ones."""
    variance = predictions.var(dim=1, unbiased=False)
    top = variance.max() if variance.numel() else torch.tensor(0.0)
    if alpha == 0 or top <= 0:
        return torch.ones_like(variance)
    return torch.exp(-alpha * variance / top)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta.

    k1: log pi - log pi_ref; k2: (log pi - log pi_ref)^2 / 2; k3: exp(r) - r - 1 with r = log pi_ref - log pi.
    """
    if estimator == "none":
        return torch.zeros_like(logprobs)
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        # Clamped so that one far-off token cannot overflow exp.
        log_ratio = log_ratio.clamp(-20.0, 20.0)
        return log_ratio.exp() - log_ratio - 1.0
    raise ValueError(f"KL estimator {estimator!r} is not one of {KL_ESTIMATORS}")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[N, T] -> scalar: mean over each answer's tokens then over answers, or over all tokens."""
    if mode == "seq-mean-token-mean":
        per_answer = (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_answer.mean()
    if mode == "token-mean":
        return (values * mask).sum() / mask.sum().clamp(min=1)
    raise ValueError(f"loss aggregation {mode!r} is not one of {LOSS_AGGREGATIONS}")


def rollout_importance_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor,
                               cap: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance sampling for rollouts sampled by another engine (vLLM, another dtype).

    The answers were drawn from pi_rollout, but the loss's ratio is taken against the learner's
    pi_old; each token is weighted by min(pi_old / pi_rollout, cap), detached. [N, T] -> [N, T]
    weights (1 off the mask) and statistics: mean weight and the share of tokens at the cap.
    """
    log_ratio = (old_logprobs.detach() - rollout_logprobs).clamp(max=20.0)
    raw = log_ratio.exp()
    weights = torch.where(mask > 0, raw.clamp(max=cap), torch.ones_like(raw))
    tokens = mask.sum().clamp(min=1)
    return weights, {"is_weight": float((weights * mask).sum() / tokens),
                     "is_capped": float(((raw > cap) & (mask > 0)).float().sum() / tokens)}


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    kl_coef: float,
    kl_estimator: str,
    aggregation: str,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped-ratio policy loss plus beta * KL to the reference.

    logprobs / old_logprobs / ref_logprobs / mask: [N, T]; advantages: [N] (one per answer);
    is_weights [N, T]: per-token weights of the policy term (rollout_importance_weights), or None.
    Returns the scalar loss and detached statistics (policy loss, KL, clip fraction).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    policy = -torch.minimum(unclipped, clipped)
    if is_weights is not None:
        policy = policy * is_weights
    if ref_logprobs is None or kl_estimator == "none" or kl_coef == 0:
        kl = torch.zeros_like(logprobs)
    else:
        kl = kl_penalty(logprobs, ref_logprobs, kl_estimator)
    loss = aggregate(policy + kl_coef * kl, mask, aggregation)
    with torch.no_grad():
        was_clipped = ((clipped < unclipped) & (mask > 0)).float()
        stats = {
            "policy_loss": float(aggregate(policy, mask, aggregation)),
            "kl": float(aggregate(kl, mask, aggregation)),
            "clip_fraction": float(was_clipped.sum() / mask.sum().clamp(min=1)),
        }
    return loss, stats
