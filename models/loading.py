"""Loading a Qwen2.5-VL policy from a local folder (never the hub)."""

from __future__ import annotations

from pathlib import Path

import torch

from models.processor import require_model_folder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_policy(folder: str | Path, dtype: str, device: str):
    """A Qwen2.5-VL model from `folder` in `dtype` on `device`; a clear error names a bad folder."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    folder = require_model_folder(folder)
    if dtype not in DTYPES:
        raise ValueError(f"model dtype {dtype!r} is not one of {sorted(DTYPES)}")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=DTYPES[dtype], local_files_only=True)
    return model.to(device)
