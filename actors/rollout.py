"""The rollout role: holds a generation copy of the policy behind a backend, answers G times per item."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from actors.call_hooks import hooked
from actors.notices import silence_known_notices
from actors.threads import pin_threads
from models.weights import sample_checksums, weights_digest
from rollouts.backend import Completion, RolloutRequest, SamplingSettings

ROLLOUT_BACKENDS = ("hf", "vllm")  # transformers generate | a vLLM engine per actor


class RolloutWorker:
    """A plain class; Ray wraps it as an actor (actors/groups.py), tests may use it in-process."""

    def __init__(self, model, rollout, seed: int):
        """model, rollout: the config's sections (ModelConfig, RolloutConfig); seed: run.seed."""
        pin_threads(rollout.threads)
        silence_known_notices()
        if rollout.backend == "hf":
            from rollouts.hf_backend import HFRolloutBackend

            self.backend = HFRolloutBackend(model, rollout)
        elif rollout.backend == "vllm":
            from rollouts.vllm_backend import VLLMRolloutBackend

            self.backend = VLLMRolloutBackend(model, rollout, seed)
        else:
            raise ValueError(f"rollout.backend {rollout.backend!r} is not one of {ROLLOUT_BACKENDS}")

    @hooked("generate")
    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings) -> list[list[Completion]]:
        return self.backend.generate(requests, sampling)

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: int) -> dict[str, float]:
        """Returns the checksums (models/weights.sample_checksums) of what the engine holds after loading, or, for
        an engine that fuses them (vLLM), of the tensors it received, before fusing."""
        self.backend.load_weights(weights, version)
        try:
            held = self.backend.state_dict()
        except NotImplementedError:
            held = weights
        return sample_checksums(held)

    def weights_digest(self) -> str:
        return weights_digest(self.backend.state_dict())

    # vLLM's weight-transfer control plane (weight_sync nccl | ipc): the learner's trainer engine calls
    # these through Ray (actors/weight_transfer.py); the backend implements rollouts.backend.WeightTransferTarget.

    def init_weight_transfer_engine(self, request) -> None:
        self.backend.init_weight_transfer_engine(request)

    def start_weight_update(self) -> None:
        self.backend.start_weight_update()

    def update_weights(self, request) -> None:
        self.backend.update_weights(request)

    def finish_weight_update(self) -> None:
        self.backend.finish_weight_update()

    def update_weight_version(self, version: str) -> int:
        """After a transfer: the engine drops what it computed with the old weights."""
        self.backend.after_sync()
        return int(version)
