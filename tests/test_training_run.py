"""End to end on the real stack: Ray actors, DeepSpeed ZeRO over gloo, MLflow on SQLite, files on disk.

Each run is `python launch/grpo.py ...` in a subprocess, as a user types it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, RayHead, run_cli
from qadata.manifest import items, read_manifest, write_manifest

pytestmark = pytest.mark.slow


def overrides(model: Path, manifest: Path, out: Path, **extra) -> list[str]:
    values = {
        "model.path": model,
        "data.train_manifest": manifest,
        "data.eval_limit": 8,
        "run.output_dir": out,
        "rollout.max_new_tokens": 24,
        "eval.max_new_tokens": 24,
        "trainer.batch_size": 4,
        "rollout.group_size": 3,
        "tracking.uri": f"sqlite:///{out.parent / 'mlflow.db'}",
        # 24 tokens cut every answer short (a whole one is ~47): the format rate is 0 and no final validation
        # item parses, which the health guard rightly refuses; the tests of the guard switch it on.
        "health.enabled": False,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def metric_steps(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_two_steps_two_zero3_ranks_then_weights_match(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    args = overrides(
        tiny_model, generated_data, out,
        **{"trainer.steps": 2, "learner.num_ranks": 2, "learner.zero_stage": 3, "learner.micro_batch": 3},
    )
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    digests = summary["weight_digests"]
    assert digests["rollouts"] == [digests["learner"]]
    # The frozen reference is sharded like the policy: each of the 2 ranks holds about half of it.
    shares = [r["reference_params_held"] / r["reference_params"] for r in summary["learner_ranks"]]
    assert len(shares) == 2 and all(0.45 < share < 0.55 for share in shares), summary["learner_ranks"]

    # The policy moved away from the initial weights, and the saved HF folder holds what was synced.
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from models.weights import weights_digest

    initial = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model)
    final = Qwen2_5_VLForConditionalGeneration.from_pretrained(out / "policy")
    assert weights_digest(initial.state_dict()) != digests["learner"]
    assert weights_digest({k: v.to(torch.float32) for k, v in final.state_dict().items()}) == digests["learner"]

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for key in ("reward/total", "reward/pairwise", "reward/format", "learner/kl", "learner/clip_fraction",
                "learner/entropy", "answers/within_group_spread", "time/generate", "time/learn"):
        assert metric_steps(uri, summary["mlflow_run_id"], key) == [1, 2], key
    assert metric_steps(uri, summary["mlflow_run_id"], "val/n") == [0, 2]

    # What it was made with: beside the run and in MLflow.
    environment = json.loads((out / "environment.json").read_text())
    assert environment["config"]["learner.num_ranks"] == 2 and environment["ray"]["resources"]["CPU"] >= 3
    assert environment["git"]["revision"] and environment["git"]["dirty"] in (True, False)
    assert environment["packages"]["deepspeed"] and environment["model"]["files"] > 3
    from mlflow.tracking import MlflowClient

    assert "environment.json" in {a.path for a in MlflowClient(uri).list_artifacts(summary["mlflow_run_id"])}


def test_resumed_run_continues_at_the_next_step(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    settings = {"trainer.steps": 2, "trainer.checkpoint_every": 1}
    first = run_cli(["launch/grpo.py", "--config", "configs/local.yaml",
                     *overrides(tiny_model, generated_data, out, **settings)])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = json.loads((out / "summary.json").read_text())
    assert (out / "checkpoints" / "latest").read_text() == "step-000002"

    # More steps change the learning-rate schedule: refused unless asked for, before any actor starts.
    refused = run_cli(["launch/grpo.py", "--config", "configs/local.yaml",
                       *overrides(tiny_model, generated_data, out, **{"trainer.steps": 3})])
    assert refused.returncode != 0 and "trainer.steps: 2 -> 3" in refused.stderr
    second = run_cli(["launch/grpo.py", "--config", "configs/local.yaml",
                      *overrides(tiny_model, generated_data, out, **{"trainer.steps": 3,
                                                                     "run.allow_config_change": True})])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "at step 2" in second.stdout
    after = json.loads((out / "summary.json").read_text())
    assert after["steps_this_run"] == 1
    assert after["mlflow_run_id"] == before["mlflow_run_id"]
    state = json.loads((out / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert state["step"] == 3 and [s["step"] for s in state["history"]["steps"]] == [1, 2, 3]
    # Data position moved on: 3 steps of 4 items each.
    train_size = len(items(read_manifest(generated_data), "train"))
    assert state["sampler"]["epoch"] * train_size + state["sampler"]["position"] == 12
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert metric_steps(uri, after["mlflow_run_id"], "reward/total") == [1, 2, 3]


def test_dynamic_sampling_trains_on_when_its_refill_hits_the_bound(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    # No group is informative under this floor: each step draws its 3 extra items, then trains on and counts.
    args = overrides(tiny_model, generated_data, out, **{
        "trainer.steps": 2, "algorithm.dynamic_sampling.enabled": True, "algorithm.variance_weighting": 1.0,
        "algorithm.dynamic_sampling.min_reward_std": 100.0, "algorithm.dynamic_sampling.max_extra_items": 3})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for key, value in {"dynamic/shortfall": 4.0, "dynamic/extra_items": 3.0, "dynamic/flat_groups": 7.0}.items():
        assert [m.value for m in client.get_metric_history(summary["mlflow_run_id"], key)] == [value, value], key
    state = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    train_size = len(items(read_manifest(generated_data), "train"))
    assert state["sampler"]["epoch"] * train_size + state["sampler"]["position"] == 2 * (4 + 3)


def run_status(uri: str, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).get_run(run_id).info.status


# A learning rate 40x the local one wrecks the answer format within two updates (format rate 0). The test
# model's own sampled format rate is ~0.8 on 12 answers a step, so the thresholds sit below its noise. These tests
# are of the format signals: the validation spread floor, which the wrecked and recovering policy may cross on 8
# held-out items, is off here (the collapse test below is its own).
WRECKING = {"health.enabled": True, "learner.lr": 2e-2, "trainer.steps": 8, "health.snapshot_every": 2,
            "rollout.max_new_tokens": 64, "eval.max_new_tokens": 64, "health.format_rate.min": 0.4,
            "health.parse_rate.min": 0.4, "health.val_spread.min": 0.0}


def test_a_collapse_is_rolled_back_and_the_run_recovers(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    args = overrides(tiny_model, generated_data, out,
                     **{**WRECKING, "health.lr_factor": 0.01, "health.max_rollbacks": 2, "health.min_scored": 0.5})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    first = summary["rollbacks"][0]
    assert first["signal"] in ("format_rate", "parse_rate") and first["to_step"] == 0 and first["lr_scale"] == 0.01
    assert "Rolled back to step 0" in result.stdout and "1 rollbacks" in result.stdout
    assert summary["status"] == "FINISHED" and summary["format_rate_last"] > 0.4
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert metric_steps(uri, summary["mlflow_run_id"], "health/rollbacks") == [first["step"]]
    assert metric_steps(uri, summary["mlflow_run_id"], "reward/total")[-1] == 8


def test_a_run_that_cannot_recover_exits_non_zero_naming_the_signal(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    args = overrides(tiny_model, generated_data, out, **{**WRECKING, "health.max_rollbacks": 1})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args])
    assert result.returncode != 0
    # Ray may flush its own log lines after ours: find the error line
    message = next((line for line in result.stderr.splitlines() if line.startswith("preresq: ")), "")
    assert message.startswith("preresq: training broke at step") and "health.max_rollbacks = 1" in message
    assert "mean over the last 3 steps" in message and str(out / "healthy" / "step-000000") in message
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FAILED" and len(summary["rollbacks"]) == 1
    # The rollback was made durable: a rerun resumes after it, with it (no checkpoint was due before).
    latest = (out / "checkpoints" / "latest").read_text()
    state = json.loads((out / "checkpoints" / latest / "trainer_state.json").read_text())
    assert state["step"] == 0 and len(state["history"]["rollbacks"]) == 1
    run_id = json.loads((out / "healthy" / "step-000000" / "trainer_state.json").read_text())["mlflow_run_id"]
    assert run_status(f"sqlite:///{tmp_path / 'mlflow.db'}", run_id) == "FAILED"


def model_that_tells_pictures_apart(tiny_model: Path, manifest: Path, folder: Path) -> Path:
    """The test model warmed up further on 16 training pictures, each answer giving its picture's MOS: its
    held-out scores (expected readout) have a spread of ~0.35, where the format warm-up alone gives one score
    for every picture (~0.002), which health.val_spread leaves unjudged."""
    import shutil

    from models import tiny_model as builder
    from qadata.media import load_image

    shutil.copytree(tiny_model, folder)
    train = items(read_manifest(manifest), "train")[:16]
    builder.warm_up(folder, [load_image(item.path) for item in train], steps=100, batch=4, log_every=0,
                    scores=[item.mos for item in train])
    return folder


def test_a_collapse_across_images_is_caught_at_validation_and_rolled_back_to_the_last_that_passed(
        tiny_model, generated_data, tmp_path):
    # A reward that pays one constant score: every training MOS 3.0 under the absolute-error reward. From a model
    # whose held-out scores spread (~0.35 at step 0), 4 steps at twice local.yaml's rate take the spread to
    # 0.13-0.21 (seeds 0-2 here), while each group's sampled answers still differ; the floor is raised to 0.3
    # so that this loss of spread is the breach (falling to one score for every picture takes longer than a test).
    start = model_that_tells_pictures_apart(tiny_model, generated_data, tmp_path / "start")
    frame = read_manifest(generated_data)
    frame.loc[frame["split"] == "train", "mos"] = 3.0
    flat = write_manifest(frame[["path", "mos", "dataset", "split", "kind"]], tmp_path / "flat.parquet")
    out = tmp_path / "run"
    # A snapshot every step, 2 kept: by step 4 the periodic ones are of steps 2 and 3, after the last passing
    # validation (step 0); the rollback must land on step 0's, which is kept for it.
    args = overrides(start, flat, out, **{
        "data.eval_manifest": generated_data, "data.eval_limit": 16, "reward.accuracy": "absolute_error",
        "learner.lr": 1e-3, "learner.warmup_steps": 0, "trainer.steps": 8, "trainer.eval_every": 4,
        "trainer.batch_size": 8, "rollout.group_size": 6, "rollout.max_new_tokens": 64, "eval.max_new_tokens": 64,
        "health.enabled": True, "health.val_spread.min": 0.3, "health.snapshot_every": 1,
        "health.keep_snapshots": 2, "health.max_rollbacks": 1, "health.format_rate.min": 0.4,
        "health.parse_rate.min": 0.4})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args])
    summary = json.loads((out / "summary.json").read_text())
    first = summary["rollbacks"][0]
    assert first["signal"] == "val_spread" and first["step"] == 4 and first["value"] < 0.3, summary["rollbacks"]
    assert first["to_step"] == 0 and f"Rolled back to step 0 ({out / 'healthy' / 'step-000000'})" in result.stdout
    # Redone from there at half the rate: it finishes with a spread, or collapses again and says so.
    if result.returncode == 0:
        assert summary["status"] == "FINISHED" and summary["val_after"]["prediction_std"] >= 0.3
    else:
        assert "val/prediction_std" in result.stderr and summary["status"] == "FAILED"


def test_a_final_policy_that_scores_too_few_items_exits_non_zero(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    args = overrides(tiny_model, generated_data, out, **{"trainer.steps": 1, "eval.max_new_tokens": 8,
                                                         "health.enabled": True})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args])
    assert result.returncode != 0 and "below health.min_scored = 95%" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FAILED" and summary["val_after"]["scored"] == 0
    assert run_status(f"sqlite:///{tmp_path / 'mlflow.db'}", summary["mlflow_run_id"]) == "FAILED"


@pytest.fixture
def ray_head():
    """A real Ray head started with `ray start` and token authentication, stopped by its own processes."""
    head = RayHead(port=6399, dashboard_port=8299, num_cpus=3)
    try:
        yield head.env, head.dashboard
    finally:
        head.stop()


def test_ray_job_submit_to_a_started_head(tiny_model, generated_data, tmp_path, ray_head):
    env, address = ray_head
    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runtime_env = json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": uri}})
    args = overrides(tiny_model, generated_data, out, **{"trainer.steps": 1})
    args = [a for a in args if not a.startswith("tracking.uri")]
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
               "--working-dir", ".", "--runtime-env-json", runtime_env, "--",
               "python", "launch/grpo.py", "--config", "configs/local.yaml", *args]
    for _ in range(6):  # a head's job agent registers some seconds after `ray start` returns (longer when busy)
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in result.stdout + result.stderr:
            break
        time.sleep(10)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert metric_steps(uri, summary["mlflow_run_id"], "reward/total") == [1]
