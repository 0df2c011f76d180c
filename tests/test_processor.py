"""Prompt encoding from a local model folder, without transformers' torchvision-bound processor."""

import pytest
import torch
from PIL import Image

from models.processor import QualityProcessor, require_model_folder
from rewards.answer_format import chat_messages


def test_repeated_pictures_are_processed_once_with_identical_inputs(tiny_model):
    processor = QualityProcessor(tiny_model)
    pictures = [Image.new("RGB", (112, 112), (30 * i, 60, 200 - 40 * i)) for i in range(3)]
    rows = [[pictures[0]], [pictures[1]], [pictures[0]], [pictures[2]], [pictures[1]]]
    got = processor.encode([chat_messages("iqa", 1)] * len(rows), rows)
    plain = processor.image_processor(images=[row[0] for row in rows], return_tensors="pt")
    assert torch.equal(got["pixel_values"], plain["pixel_values"])
    assert torch.equal(got["image_grid_thw"], plain["image_grid_thw"])
    # Each image slot became as many <|image_pad|> tokens as the image has merged patches (16 at 112 px).
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ((got["input_ids"] == pad).sum(dim=1) == 16).all()


def test_slot_count_must_match_pictures(tiny_model):
    processor = QualityProcessor(tiny_model)
    with pytest.raises(ValueError, match="1 image slots but 2 images"):
        processor.encode([chat_messages("iqa", 1)], [[Image.new("RGB", (112, 112))] * 2])


def test_missing_model_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        require_model_folder(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        require_model_folder(tmp_path)
