"""Shared fixtures: the generated data set and a tiny Qwen2.5-VL built here, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

# Fixtures that build and warm up a model (a minute or more on 2 cores): a test that uses one, directly or through
# another fixture, is not a unit test and is marked slow, so `make test-fast` (-m "not slow") never builds them.
MODEL_FIXTURES = {"tiny_model", "tiny_model_heads64"}


def pytest_collection_modifyitems(items):
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def generated_data(tmp_path_factory) -> Path:
    from qadata.generated import generate

    return generate(tmp_path_factory.mktemp("data") / "generated")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, generated_data) -> Path:
    """A tiny model with a short format warm-up, images and clips (most greedy answers parse): real files."""
    import torch

    from models import tiny_model as builder
    from qadata.manifest import items, read_manifest
    from qadata.media import load_image

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    builder.build(folder)
    images = [load_image(item.path) for item in items(read_manifest(generated_data), "train")[:8]]
    builder.warm_up(folder, images, steps=200, batch=4, log_every=0, videos=_clips(folder.parent / "clips"),
                    video_every=3)
    return folder


@pytest.fixture(scope="session")
def tiny_model_heads64(tmp_path_factory, generated_data) -> Path:
    """The tiny model with 2 text heads of 64 (vLLM's CPU attention wants head_dim >= 64), warmed up the same way."""
    import torch

    from models import tiny_model as builder
    from qadata.manifest import items, read_manifest
    from qadata.media import load_image

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("model64") / "tiny-heads64"
    builder.build(folder, builder.TinyModelSpec(heads=2))
    images = [load_image(item.path) for item in items(read_manifest(generated_data), "train")[:8]]
    builder.warm_up(folder, images, steps=200, batch=4, log_every=0, videos=_clips(folder.parent / "clips"),
                    video_every=3)
    return folder


def _clips(folder: Path) -> list:
    """The pictures of 4 short panning clips (64 px, as the CI benchmark's), for the VQA answer format."""
    import numpy as np

    from helpers import video_settings
    from qadata.benchmark_set import pan_clip
    from qadata.generated import photo_pixels
    from qadata.video import video_pictures
    from qadata.video_files import write_video

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [write_video(folder / f"{photo}.mp4", pan_clip(photo_pixels(photo), 16, 64, rng), fps=24)
             for photo in ("chelsea", "coffee", "astronaut", "rocket")]
    return [video_pictures(path, video_settings()) for path in paths]
