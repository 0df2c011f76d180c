"""Turns (images, chat messages) into Qwen2.5-VL model inputs, from a local model folder.

transformers' own Qwen2.5-VL processor insists on its video processor, which needs torchvision;
PyPI's torchvision is CUDA-linked and breaks CPU torch. PreResQ's video flow feeds pictures (a
frame grid and single frames), so the image processor and the tokenizer are all it needs: this
class does the processor's one job (expand each image placeholder to its patch-token count).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rewards.answer_format import SCORE_DIGITS

IMAGE_PAD = "<|image_pad|>"
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def require_model_folder(folder: str | Path) -> Path:
    """The folder as a Path, or a clear error naming it when it is not a saved model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model folder {folder} has no config.json (not a saved Hugging Face model)")
    return folder


def answer_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """(ids that end an answer, picture-token ids an answer must not contain) of a Qwen chat tokenizer."""
    eos_ids = sorted({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")})
    return eos_ids, [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]


def digit_token_ids(tokenizer) -> list[int]:
    """The ids of the single-digit tokens "1".."5", a score's possible leading digits (the `expected` readout)."""
    ids = [tokenizer.convert_tokens_to_ids(d) for d in SCORE_DIGITS]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer has no token for each digit of {SCORE_DIGITS}: the expected readout needs "
                         "them (use eval.readout greedy or mean)")
    return ids


def token_starts(tokenizer, token_ids: list[int], text: str) -> list[int] | None:
    """Where each token begins in `text`, their decode with special tokens skipped; None when the decoded
    prefixes are not prefixes of `text` (a token that splits a character), so no token is mapped wrongly."""
    starts = []
    for end in range(len(token_ids)):
        prefix = tokenizer.decode(token_ids[:end], skip_special_tokens=True)
        if not text.startswith(prefix):
            return None
        starts.append(len(prefix))
    return starts


def resolve_model(path: str | Path) -> Path:
    """A saved model folder, or a preresq run folder's `policy/` (its final weights)."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "policy" / "config.json").is_file():
        return path / "policy"
    return require_model_folder(path)


class QualityProcessor:
    """Tokenizer + image processor of one model folder, with left padding for generation."""

    def __init__(self, folder: str | Path, min_pixels: int | None = None, max_pixels: int | None = None):
        from transformers import AutoImageProcessor, AutoTokenizer

        folder = require_model_folder(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"
        kwargs = {}
        if min_pixels is not None:
            kwargs["min_pixels"] = min_pixels
        if max_pixels is not None:
            kwargs["max_pixels"] = max_pixels
        self.image_processor = AutoImageProcessor.from_pretrained(folder, **kwargs)
        self.merge = self.image_processor.merge_size**2
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.eos_ids, self.vision_ids = answer_token_ids(self.tokenizer)
        self.image_pad_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)

    def prompt_text(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, messages: list[list[dict]], images: list[list]) -> dict[str, torch.Tensor]:
        """Prompts for a batch: messages[b] and its images[b] (PIL, RGB) -> left-padded inputs.

        Returns input_ids / attention_mask [N, L], pixel_values [patches, C*T*P*P],
        image_grid_thw [total images, 3] and mm_token_type_ids [N, L] (1 on picture tokens): without it
        Qwen2.5-VL cannot build its 3-D (time, height, width) rotary positions and gives picture tokens
        plain 1-D positions, unlike the model's pre-training and vLLM.
        """
        flat = [image for row in images for image in row]
        vision = self._vision(flat) if flat else {}
        grids = vision["image_grid_thw"].tolist() if flat else []
        texts, used = [], 0
        for conversation, row in zip(messages, images):
            text = self.prompt_text(conversation)
            pieces = text.split(IMAGE_PAD)
            if len(pieces) - 1 != len(row):
                raise ValueError(f"prompt has {len(pieces) - 1} image slots but {len(row)} images were given")
            out = pieces[0]
            for piece in pieces[1:]:
                t, h, w = grids[used]
                out += IMAGE_PAD * (t * h * w // self.merge) + piece
                used += 1
            texts.append(out)
        batch = self.tokenizer(texts, return_tensors="pt", padding=True)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if flat:
            inputs["pixel_values"] = vision["pixel_values"]
            inputs["image_grid_thw"] = vision["image_grid_thw"]
            inputs["mm_token_type_ids"] = (batch["input_ids"] == self.image_pad_id).to(torch.int32)
        return inputs

    def _vision(self, images: list) -> dict[str, torch.Tensor]:
        """Pixel patches and grids for `images`, processing each distinct picture object once
        (a GRPO batch repeats every picture G times)."""
        unique: dict[int, int] = {}
        for image in images:
            unique.setdefault(id(image), len(unique))
        distinct = list({id(image): image for image in images}.values())
        vision = self.image_processor(images=distinct, return_tensors="pt")
        grids = vision["image_grid_thw"]
        sizes = grids.prod(dim=1).tolist()
        chunks = torch.split(vision["pixel_values"], sizes)
        order = [unique[id(image)] for image in images]
        return {"pixel_values": torch.cat([chunks[i] for i in order]), "image_grid_thw": grids[order]}

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)
