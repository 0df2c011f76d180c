"""How many tokens a prompt's pictures take, checked before a request reaches the engine.

Qwen2.5-VL resizes each picture to a multiple of patch x merge (28 px) within [min_pixels,
max_pixels] and gives one token per merged 28 x 28 block. An engine handed a prompt longer than its
context, or more pictures than it was started for, fails deep inside with an unhelpful error (or a
token-count mismatch); here the item is named instead, and can be skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def resized_side(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) after Qwen2-VL's resize: each side rounded to `factor`, the area scaled into the pixel bounds."""
    if min(height, width) <= 0:
        raise ValueError(f"picture of size {width}x{height}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return h, w


def picture_tokens(width: int, height: int, min_pixels: int, max_pixels: int, patch: int = 14,
                   merge: int = 2) -> int:
    """Tokens of one picture of `width` x `height` px in the prompt."""
    h, w = resized_side(height, width, patch * merge, min_pixels, max_pixels)
    return (h // patch) * (w // patch) // (merge * merge)


@dataclass(frozen=True)
class PromptLimits:
    max_model_len: int        # the engine's context: prompt + answer tokens
    max_pictures: int         # pictures per prompt the engine was started for
    min_pixels: int
    max_pixels: int
    patch: int = 14
    merge: int = 2


def budget_problem(item_id: str, text_tokens: int, picture_sizes: list[tuple[int, int]], max_new_tokens: int,
                   limits: PromptLimits) -> str | None:
    """Why this request cannot run (naming the item), or None. text_tokens: the prompt without its pictures."""
    if len(picture_sizes) > limits.max_pictures:
        return (f"item {item_id}: {len(picture_sizes)} pictures, the engine takes at most {limits.max_pictures} "
                "(rollout.vllm.max_pictures)")
    vision = sum(picture_tokens(w, h, limits.min_pixels, limits.max_pixels, limits.patch, limits.merge)
                 for w, h in picture_sizes)
    total = text_tokens + vision + max_new_tokens
    if total > limits.max_model_len:
        return (f"item {item_id}: {text_tokens} text + {vision} picture tokens + {max_new_tokens} to generate = "
                f"{total} > max_model_len {limits.max_model_len} (lower model.max_pixels or raise "
                "rollout.vllm.max_model_len)")
    return None
