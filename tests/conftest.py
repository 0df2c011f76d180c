"""Shared fixtures: the generated data set and a tiny Qwen2.5-VL built here, made once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="session")
def generated_data(tmp_path_factory) -> Path:
    from qadata.generated import generate

    return generate(tmp_path_factory.mktemp("data") / "generated")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, generated_data) -> Path:
    """A tiny model with a short format warm-up (most greedy answers parse): real files, from_pretrained."""
    import torch

    from qadata.manifest import items, read_manifest
    from qadata.media import load_image
    from rollouts import tiny_model as builder

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    builder.build(folder)
    images = [load_image(item.path) for item in items(read_manifest(generated_data), "train")[:8]]
    builder.warm_up(folder, images, steps=120, batch=4, log_every=0)
    return folder
