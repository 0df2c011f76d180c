"""A policy's identity: one hash over its weights, the same for the learner's gathered copy and a rollout's."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """A SHA-256 of every tensor's name and float32 bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(weights[name].detach().float().cpu().numpy()).tobytes())
    return digest.hexdigest()
