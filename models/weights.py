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


CHECKSUM_SAMPLES = 64  # elements read per tensor: a changed adapter moves every element of its merged weight


def sample_checksums(weights: dict[str, torch.Tensor], samples: int = CHECKSUM_SAMPLES) -> dict[str, float]:
    """name -> a float64 checksum of `samples` evenly spaced elements of the tensor (position-weighted, so a
    permutation shows): cheap enough for every sync, the same wherever the same values are held."""
    return {name: sample_checksum(tensor, samples) for name, tensor in weights.items()}


def sample_checksum(tensor: torch.Tensor, samples: int = CHECKSUM_SAMPLES) -> float:
    flat = tensor.detach().reshape(-1)
    if flat.numel() == 0:
        return 0.0
    count = min(samples, flat.numel())
    # Integer spacing: a float linspace over a 7B layer's 1e8 elements rounds past the last one.
    index = (torch.arange(count, dtype=torch.int64) * (flat.numel() - 1)) // max(count - 1, 1)
    index = index.to(flat.device)
    values = flat[index].double().cpu()
    return float((values * torch.arange(1, len(values) + 1, dtype=torch.float64)).sum())
