"""Picture token counts match the model's own image processor; oversized requests are named."""

import numpy as np
import pytest
from PIL import Image

from models.processor import QualityProcessor
from rollouts.prompt_budget import PromptLimits, budget_problem, picture_tokens


@pytest.mark.parametrize("min_pixels, max_pixels",
                         [(3136, 112 * 112), (3136, 200 * 28 * 28), (56 * 56, 1280 * 28 * 28)])
def test_picture_tokens_match_the_image_processor(tiny_model, min_pixels, max_pixels):
    processor = QualityProcessor(tiny_model, min_pixels, max_pixels)
    rng = np.random.default_rng(0)
    sizes = [(int(w), int(h)) for w, h in rng.integers(20, 1500, size=(12, 2))] + [(97, 61), (28, 28), (1920, 1080)]
    pictures = [Image.new("RGB", size) for size in sizes]
    grids = processor.image_processor(images=pictures, return_tensors="pt")["image_grid_thw"]
    expected = (grids.prod(dim=1) // processor.merge).tolist()
    assert [picture_tokens(w, h, min_pixels, max_pixels) for w, h in sizes] == expected


def test_budget_names_the_item_and_the_option_to_change():
    limits = PromptLimits(max_model_len=1024, max_pictures=4, min_pixels=3136, max_pixels=448 * 448)
    assert budget_problem("a.jpg", 40, [(448, 448)], 256, limits) is None  # 256 picture tokens
    too_long = budget_problem("b.mp4", 40, [(448, 448)] * 4, 256, limits)
    assert too_long is not None and "b.mp4" in too_long and "1320 > max_model_len 1024" in too_long
    too_many = budget_problem("c.mp4", 40, [(56, 56)] * 5, 16, limits)
    assert too_many is not None and "c.mp4" in too_many and "at most 4" in too_many
