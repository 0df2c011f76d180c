"""LoRA on the learner, in-process (no Ray): the reference is the policy with its adapters off, what a sync sends
is the merged policy under the base's names and reaches a rollout engine, a sync that delivers nothing is a
named error, and the byte accounting holds no reference copy and no optimizer state for the frozen base."""

from __future__ import annotations

import pytest
import torch

from actors.learner import LearnerRank, LearnerSettings, TrainSample
from actors.lora import LoraSettings, target_names
from actors.weight_sync import WeightSyncError, check_delivery
from helpers import local_config, rollout_worker
from models.loading import load_policy
from models.weights import sample_checksums, weights_digest
from qadata.manifest import items, read_manifest
from qadata.media import load_image
from rewards.answer_format import chat_messages

LANGUAGE = "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"


def lora_learner(tiny_model, port: int, *overrides: str) -> LearnerRank:
    """One rank, 3 answers a step, lr 1e-2 (the adapters start at B = 0), the KL term on."""
    cfg = local_config(tiny_model, "rollout.temperature=1.0", "learner.lr=1e-2", "algorithm.kl_coef=0.1",
                       "trainer.batch_size=1", "rollout.group_size=3", "learner.micro_batch=3",
                       "learner.lora.rank=4", *overrides)
    rank = LearnerRank(LearnerSettings.from_config(cfg), 0, 1)
    rank.setup("127.0.0.1", port)
    return rank


def a_batch(generated_data, rank: LearnerRank) -> list[TrainSample]:
    item = items(read_manifest(generated_data), "train")[0]
    messages = chat_messages("iqa", 1)
    tokens = rank.processor.tokenizer("<think>soft</think><answer>\n3.00\n</answer>")["input_ids"]
    return [TrainSample([load_image(item.path)], messages, tokens, a, [0.0] * len(tokens), 0) for a in (1.0, -0.5, 0.5)]


def test_delivery_is_judged_before_the_cast_and_an_invisible_engine_side_is_not_judged():
    first = {"sent": {"w": 1.0}, "merged": {"w": 1.0001}, "trainable": 5.0}
    delivered = check_delivery(1, first, [{"w": 1.0}, None], None)  # None: vLLM's nccl/ipc engine side
    # In bf16 a small update can round to the same sent weights: the merged (pre-cast) ones moved, so no error.
    rounded = {"sent": {"w": 1.0}, "merged": {"w": 1.0002}, "trainable": 5.5}
    check_delivery(2, rounded, [{"w": 1.0}, None], delivered)
    unmoved = {"sent": {"w": 1.0}, "merged": {"w": 1.0001}, "trainable": 5.5}
    with pytest.raises(WeightSyncError, match="version 3: the learner's trained parameters changed"):
        check_delivery(3, unmoved, [None, None], delivered)
    with pytest.raises(WeightSyncError, match="rollout actor 1 holds 1 of 1 tensors .* \\(w\\)"):
        check_delivery(4, rounded, [{"w": 1.0}, {"w": 2.0}], delivered)
    check_delivery(5, {**first, "trainable": 5.0}, [{"w": 1.0}], delivered)  # a step that applied nothing


@pytest.mark.slow
def test_targets_are_linear_layers_of_their_own_tower_and_a_missing_one_is_named(tiny_model):
    model = load_policy(tiny_model, "float32", "cpu")
    names = target_names(model, LoraSettings(4, 8.0, 0.0, ("gate_proj",), ("proj",)))
    assert names and all(n.endswith(".mlp.gate_proj") and n.startswith("model.language_model.") or
                         n.endswith(".attn.proj") and n.startswith("model.visual.blocks.") for n in names), names
    assert "model.visual.patch_embed.proj" not in names  # a Conv3d
    assert not any(n.startswith("model.visual.") and n.endswith("gate_proj") for n in names)
    with pytest.raises(ValueError, match="learner.lora.vision_targets.*'q_proj' names no linear layer"):
        target_names(model, LoraSettings(4, 8.0, 0.0, (), ("q_proj",)))


@pytest.mark.slow
def test_a_lora_step_sends_the_merged_policy_under_the_base_names(tiny_model, generated_data):
    rank = lora_learner(tiny_model, 29741)
    base = load_policy(tiny_model, "float32", "cpu").state_dict()
    start = rank.full_weights()
    assert set(start) == set(base)  # merged: the base's names, no lora_A / base_layer
    assert weights_digest(start) == weights_digest(base)  # B = 0: the untrained adapters change nothing
    first = rank.delivery_record()

    stats = rank.train_step(a_batch(generated_data, rank), rank.settings.lr)
    assert stats["applied"] == 1.0 and stats["kl"] == pytest.approx(0.0, abs=1e-6)  # reference = policy at B = 0
    stats = rank.train_step(a_batch(generated_data, rank), rank.settings.lr)
    assert stats["kl"] > 1e-6  # the adapters moved the policy away from its base, which the reference still is
    after = rank.full_weights()
    moved = {name for name in base if not torch.equal(after[name], base[name])}
    assert moved and all("_proj" in name or ".qkv." in name or ".attn.proj." in name for name in moved), moved
    assert not any("embed" in name or "norm" in name for name in moved)

    # The rollout engine takes the merged weights as any Qwen2.5-VL, and what it holds is what was sent.
    worker = rollout_worker(tiny_model)
    record = rank.delivery_record()
    held = worker.load_weights(after, version=2)
    assert held == record["sent"] and worker.weights_digest() == weights_digest(after)
    delivered = check_delivery(2, record, [held], check_delivery(0, first, [sample_checksums(start)], None))

    # A sync whose payload is stale (the verl#7495 shape: what arrives is not what the learner became) is named.
    stale = worker.load_weights(start, version=3)
    with pytest.raises(WeightSyncError, match="rollout actor 0 holds .* tensors other than the learner sent"):
        check_delivery(3, record, [stale], delivered)
    # A learner that trained but sent the weights of the sync before: the adapters were left out of the merge.
    rank.train_step(a_batch(generated_data, rank), rank.settings.lr)
    rank.full_weights()
    unmerged = {**rank.delivery_record(), "merged": record["merged"], "sent": record["sent"]}
    with pytest.raises(WeightSyncError, match="trained parameters changed since the last sync but the weights"):
        check_delivery(4, unmerged, [held], delivered)


@pytest.mark.slow
def test_a_vision_only_adapter_changes_only_the_vision_tower_and_reaches_the_engine(tiny_model, generated_data):
    rank = lora_learner(tiny_model, 29743, "learner.lora.language_targets=[]", "learner.lora.vision_targets=[qkv]")
    start = rank.full_weights()
    rank.train_step(a_batch(generated_data, rank), rank.settings.lr)
    after = rank.full_weights()
    moved = sorted(name for name in start if not torch.equal(after[name], start[name]))
    assert moved and all(name.startswith("model.visual.blocks.") and name.endswith(".attn.qkv.weight")
                         for name in moved), moved
    worker = rollout_worker(tiny_model)
    before = worker.weights_digest()
    held = worker.load_weights(after, version=1)
    assert worker.weights_digest() != before and held == rank.delivery_record()["sent"]


@pytest.mark.slow
def test_byte_accounting_lora_holds_no_reference_copy_and_no_frozen_optimizer_state(tiny_model, generated_data):
    full = lora_learner(tiny_model, 29745, "learner.lora.rank=0")
    lora = lora_learner(tiny_model, 29747)
    for rank in (full, lora):
        rank.train_step(a_batch(generated_data, rank), rank.settings.lr)
    full_bytes, lora_bytes = full.bytes_by_kind(), lora.bytes_by_kind()
    total = full_bytes["trainable_params"]
    assert full_bytes["frozen_params"] == 0 and full_bytes["reference_model"] == total  # a second fp32 copy
    assert full_bytes["optimizer_state"] == 2 * total  # Adam's two moments of every weight
    assert lora_bytes["reference_model"] == 0  # the policy with its adapters off
    assert lora_bytes["frozen_params"] == total  # the base, fp32 here (model.dtype), not trained
    assert 0 < lora_bytes["trainable_params"] < total / 10
    assert lora_bytes["optimizer_state"] == 2 * lora_bytes["trainable_params"]  # none for the frozen base
    assert lora_bytes["gradients"] == lora_bytes["trainable_params"]
    assert all(p.dtype == torch.float32 for p in lora.engine.module.parameters() if p.requires_grad)
