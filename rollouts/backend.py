"""The rollout backend interface: prompts with media in, G sampled answers per prompt out.

A backend owns one copy of the policy for generation. The transformers backend (`hf_backend`)
runs on CPU or GPU; the vLLM backend implements the same methods, plus `WeightTransferTarget` (vLLM's
NCCL / CUDA-IPC weight transfer). Weights arrive as a name -> tensor mapping in the model's own
`state_dict` naming, the learner's full (gathered) weights. The rollout actor calls nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class SamplingSettings:
    """n answers per prompt (greedy: one, the most likely); seed None: unseeded. Built from the config.

    digit_logprobs: each answer also records, at every position, the log-probs of the tokens "1".."5" and where
    each token starts in its text (the `expected` readout, evaluation/readout.py)."""

    n: int
    temperature: float
    top_p: float
    top_k: int  # 0: no top-k truncation
    max_new_tokens: int
    seed: int | None
    greedy: bool
    digit_logprobs: bool

    @classmethod
    def training(cls, rollout, seed: int) -> SamplingSettings:
        """A step's G answers per item, from the config's `rollout` section."""
        return cls(n=rollout.group_size, temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
                   max_new_tokens=rollout.max_new_tokens, seed=seed, greedy=False, digit_logprobs=False)

    @classmethod
    def evaluation(cls, evaluation, rollout, seed: int) -> SamplingSettings:
        """Validation and scoring (`eval` section) by its readout: one greedy answer (greedy, expected), or
        `samples` answers at the rollout temperature (mean)."""
        sampled = evaluation.readout == "mean"
        return cls(n=evaluation.samples if sampled else 1, temperature=rollout.temperature, top_p=rollout.top_p,
                   top_k=rollout.top_k, max_new_tokens=evaluation.max_new_tokens, seed=seed, greedy=not sampled,
                   digit_logprobs=evaluation.readout == "expected")


@dataclass
class RolloutRequest:
    """One item to answer: its pictures (PIL RGB), the chat messages with one slot per picture, its task (iqa |
    vqa: the question the messages ask, and how the answers are read and rewarded) and its manifest's dataset."""

    item_id: str
    images: list
    messages: list[dict]
    task: str  # iqa | vqa
    dataset: str = ""


@dataclass
class Completion:
    """One sampled answer: token ids (eos included when generated), text, per-token sampling log-probs.

    `skipped`: the backend did not answer the prompt (too long for the engine); no tokens, not trained on.
    With `SamplingSettings.digit_logprobs`: `digit_logprobs` [T][5], the log-probs (temperature 1) of the tokens
    "1".."5" at each position, and `token_starts` [T], where each token begins in `text` (None: the tokens' texts
    do not add up to `text`)."""

    token_ids: list[int]
    text: str
    logprobs: list[float] = field(default_factory=list)
    finished: bool = True
    skipped: bool = False
    digit_logprobs: list[list[float]] | None = None
    token_starts: list[int] | None = None


class RolloutBackend(Protocol):
    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings) -> list[list[Completion]]:
        """Answers [len(requests)][sampling.n]."""

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: int) -> None:
        """Replace the policy weights; later generations use exactly these."""

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        """The generation weights in Hugging Face naming (for digests); NotImplementedError if the engine
        keeps them fused."""


class WeightTransferTarget(Protocol):
    """A backend that takes weights over vLLM's own transfer engine (weight_sync nccl | ipc); the learner's
    trainer side drives these through the rollout actor (actors/weight_transfer.py)."""

    def init_weight_transfer_engine(self, request) -> None: ...

    def start_weight_update(self) -> None:
        """Ready to receive (woken from sleep first)."""

    def update_weights(self, request) -> None: ...

    def finish_weight_update(self) -> None: ...

    def after_sync(self) -> None:
        """Caches computed with the old weights are dropped."""
