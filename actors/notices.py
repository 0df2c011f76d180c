"""Third-party notices that tell a preresq user nothing, silenced where they arise (each by its message, so any
other warning of the same library still shows). Called at the start of every role's process and the controller's.
"""

from __future__ import annotations

import os
import warnings

import torch


def silence_known_notices() -> None:
    # peft brings accelerate, through which transformers imports DeepSpeed in any process that loads a model; where
    # there is no GPU, DeepSpeed's accelerator guess warns on import. Said, not guessed, and a set value is kept.
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # DeepSpeed's ZeRO-3 calls these torch.distributed functions under their old names; nothing of ours to change.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` "
                            r"is deprecated", category=FutureWarning)
    # Ray's zero-copy tensor transport (RAY_ENABLE_ZERO_COPY_TORCH_TENSORS, set in actors/ray_connection.py) says on
    # first use that it is on, and hands read-only buffers to torch; weights and batches are only read.
    warnings.filterwarnings("ignore", message=r"Zero-copy tensor serialization is enabled")
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable",
                            module=r"ray\._private\.tensor_serialization_utils")
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    # A role's model-loading bar reaches the driver as log lines, one bar per actor, not as a live terminal bar.
    transformers_logging.disable_progress_bar()
