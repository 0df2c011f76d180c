"""The rollout backend interface: prompts with media in, G sampled answers per prompt out.

A backend owns one copy of the policy for generation. The transformers backend (`hf_backend`)
runs on CPU or GPU; the vLLM backend implements the same methods, plus `WeightTransferTarget` (vLLM's
NCCL / CUDA-IPC weight transfer). Weights arrive as a name -> tensor mapping in the model's own
`state_dict` naming, the learner's full (gathered) weights. The rollout actor calls nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

import torch


@dataclass(frozen=True)
class SamplingSettings:
    """n answers per prompt; temperature 1 with no top-k/top-p truncation is GRPO's default."""

    n: int = 6
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int | None = None
    greedy: bool = False


@dataclass
class RolloutRequest:
    """One item to answer: its pictures (PIL RGB), the chat messages with one slot per picture, and its
    task (iqa | vqa: the question the messages ask, and how the answers are read and rewarded)."""

    item_id: str
    images: list
    messages: list[dict]
    task: str = "iqa"


@dataclass
class Completion:
    """One sampled answer: token ids (eos included when generated), text, per-token sampling log-probs.

    `skipped`: the backend did not answer the prompt (too long for the engine); no tokens, not trained on."""

    token_ids: list[int]
    text: str
    logprobs: list[float] = field(default_factory=list)
    finished: bool = True
    skipped: bool = False


class RolloutBackend(Protocol):
    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings) -> list[list[Completion]]:
        """Answers [len(requests)][sampling.n]."""

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: int) -> None:
        """Replace the policy weights; later generations use exactly these."""

    def weights_version(self) -> int:
        """The version of the last `load_weights` (0 for the weights loaded from disk)."""

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

    def after_sync(self, version: int | None = None) -> None:
        """Caches computed with the old weights are dropped; `version` recorded."""
