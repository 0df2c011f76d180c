"""A LoRA run end to end (Ray actors, DeepSpeed ZeRO-2, MLflow, files on disk): every sync verified against the
learner's merged weights, the final policy a plain merged Qwen2.5-VL folder with its adapter folder beside it,
checkpoints without the frozen base, and a run killed between checkpoints resumes to the same final weights
(the adapters' dropout included)."""

from __future__ import annotations

import json
import signal

import pytest
from test_training_run import overrides

from helpers import Run, run_cli

pytestmark = pytest.mark.slow


def lora_args(model, manifest, out) -> list[str]:
    settings = {"trainer.steps": 4, "trainer.checkpoint_every": 2, "trainer.verify_sync": True,
                "learner.lora.rank": 4, "learner.lora.dropout": 0.1, "learner.lr": 1e-2, "algorithm.kl_coef": 0.05}
    return ["launch/grpo.py", "--config", "configs/local.yaml", *overrides(model, manifest, out, **settings)]


def test_a_lora_run_syncs_merged_weights_saves_a_plain_policy_and_resumes_exactly(tiny_model, generated_data,
                                                                                   tmp_path):
    import torch
    from mlflow.tracking import MlflowClient
    from transformers import Qwen2_5_VLForConditionalGeneration

    from models.weights import weights_digest

    whole = tmp_path / "whole"
    result = run_cli(lora_args(tiny_model, generated_data, whole))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((whole / "summary.json").read_text())
    digests = summary["weight_digests"]
    assert digests["rollouts"] == [digests["learner"]]
    assert summary["learner_ranks"][0]["reference_params"] == 0  # the reference is the policy with adapters off

    # Every step's sync: each of the model's 57 tensors checked on the rollout actor against the learner's.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    verified = {m.step: m.value for m in client.get_metric_history(summary["mlflow_run_id"], "sync/tensors_verified")}
    initial = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model).state_dict()
    assert sorted(verified) == [1, 2, 3, 4]
    assert set(verified.values()) == {float(len(initial))}

    # The final policy is a merged Hugging Face folder (what evaluate.py, score.py and vLLM load), unlike the start.
    final = Qwen2_5_VLForConditionalGeneration.from_pretrained(whole / "policy").state_dict()
    assert set(final) == set(initial)
    assert weights_digest({k: v.to(torch.float32) for k, v in final.items()}) == digests["learner"]
    assert weights_digest(initial) != digests["learner"]
    adapter = whole / "policy-adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    # Checkpoints hold the adapters and their optimizer state, not the frozen base.
    states = list((whole / "checkpoints" / "step-000004" / "deepspeed").rglob("*model_states.pt"))
    model_bytes = sum(v.numel() * v.element_size() for v in initial.values())
    assert states and sum(p.stat().st_size for p in states) < model_bytes / 4, states

    # Killed after step 2's checkpoint, while step 3 runs; the rerun resumes there and ends on the same weights.
    cut = tmp_path / "cut"
    run = Run(lora_args(tiny_model, generated_data, cut))
    run.wait_for("step 3/4")
    run.process.send_signal(signal.SIGKILL)
    run.finish()
    assert (cut / "checkpoints" / "latest").read_text() == "step-000002"
    rerun = run_cli(lora_args(tiny_model, generated_data, cut))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "at step 2" in rerun.stdout
    resumed = json.loads((cut / "summary.json").read_text())["weight_digests"]
    assert resumed["learner"] == digests["learner"] and resumed["rollouts"] == [digests["learner"]]


def test_lora_over_two_zero3_ranks_syncs_and_saves_the_merged_policy(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    args = [a for a in lora_args(tiny_model, generated_data, out) if not a.startswith("trainer.steps")]
    result = run_cli([*args, "trainer.steps=2", "learner.num_ranks=2", "learner.zero_stage=3",
                      "learner.micro_batch=3"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    digests = summary["weight_digests"]
    assert digests["rollouts"] == [digests["learner"]] and len(summary["learner_ranks"]) == 2

    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from models.weights import weights_digest

    initial = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model).state_dict()
    final = Qwen2_5_VLForConditionalGeneration.from_pretrained(out / "policy").state_dict()
    assert weights_digest({k: v.to(torch.float32) for k, v in final.items()}) == digests["learner"]
    assert weights_digest(initial) != digests["learner"]  # the gathered shards' adapters were merged
