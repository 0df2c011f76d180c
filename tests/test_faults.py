"""Faults survived: real processes killed (SIGKILL) or stopped (SIGSTOP) in the middle of a real run.

A rollout or reward actor's death is survived with nothing lost or counted twice (the run ends with the same
weights and the same per-step rewards as an uninterrupted one); a learner rank's death starts the learner group
again from the newest checkpoint, with the same end (past run.max_relaunches it is a named error); a stuck actor
ends the run with an error naming the role and the option; a driver killed between checkpoints and rerun gives
the same final weights, each step logged once.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest
from test_training_run import metric_steps, overrides, run_status

from helpers import Run, noise_in, run_cli

pytestmark = pytest.mark.slow

STEPS = 6
SETTINGS = {"trainer.steps": STEPS, "trainer.checkpoint_every": 2, "trainer.verify_sync": True,
            "health.enabled": False}


def args_for(model: Path, data: Path, out: Path, **extra) -> list[str]:
    return ["launch/grpo.py", "--config", "configs/local.yaml", *overrides(model, data, out, **{**SETTINGS, **extra})]


def rewards_by_step(uri: str, run_id: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(uri).get_metric_history(run_id, "reward/total")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {sorted(steps)}"
    return {m.step: m.value for m in history}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, generated_data, tmp_path_factory):
    """The reference: the same run without a fault. -> (summary, per-step rewards, output folder, console)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_cli(args_for(tiny_model, generated_data, out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    return (summary, rewards_by_step(f"sqlite:///{out.parent / 'mlflow.db'}", summary["mlflow_run_id"]), out,
            result.stdout + result.stderr)


@pytest.mark.parametrize("role", ["RolloutWorker", "RewardWorker"])
def test_a_killed_rollout_or_reward_actor_is_restarted_and_nothing_is_lost(
        tiny_model, generated_data, tmp_path, uninterrupted, role):
    reference, reference_rewards, *_ = uninterrupted
    out = tmp_path / "run"
    run = Run(args_for(tiny_model, generated_data, out))
    run.wait_for(f"step 3/{STEPS}")
    victim = run.actor_process(role)
    victim.send_signal(signal.SIGKILL)
    assert run.finish() == 0, run.output[-4000:]
    assert "died (" in run.output and "Ray restarts it and its work is redone" in run.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["steps_this_run"] == STEPS
    if role == "RolloutWorker":
        assert summary["rollout_restarts"] == 1
    # Verified weights, and the very weights and rewards of the run that was not interrupted.
    assert summary["weight_digests"]["rollouts"] == [summary["weight_digests"]["learner"]]
    assert summary["weight_digests"]["learner"] == reference["weight_digests"]["learner"]
    assert rewards_by_step(f"sqlite:///{tmp_path / 'mlflow.db'}", summary["mlflow_run_id"]) == reference_rewards


def test_a_driver_killed_between_checkpoints_resumes_to_the_same_weights_each_step_logged_once(
        tiny_model, generated_data, tmp_path, uninterrupted):
    reference, reference_rewards, *_ = uninterrupted
    out = tmp_path / "run"
    run = Run(args_for(tiny_model, generated_data, out))
    run.wait_for(f"step 3/{STEPS}")  # checkpoint 2 is written, step 3 logged, 4 not yet checkpointed
    run.process.send_signal(signal.SIGKILL)
    run.finish()
    assert (out / "checkpoints" / "latest").read_text() == "step-000002"

    rerun = run_cli(args_for(tiny_model, generated_data, out))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resumed from" in rerun.stdout and "at step 2" in rerun.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weight_digests"]["learner"] == reference["weight_digests"]["learner"]
    assert summary["replay_mismatch"] == []
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert rewards_by_step(uri, summary["mlflow_run_id"]) == reference_rewards  # each step once, same values
    assert metric_steps(uri, summary["mlflow_run_id"], "learner/kl") == list(range(1, STEPS + 1))
    assert run_status(uri, summary["mlflow_run_id"]) == "FINISHED"


def test_a_killed_learner_rank_is_relaunched_from_the_newest_checkpoint_and_ends_as_if_uninterrupted(
        tiny_model, generated_data, tmp_path, uninterrupted):
    reference, reference_rewards, *_ = uninterrupted
    out = tmp_path / "run"
    run = Run(args_for(tiny_model, generated_data, out))
    run.wait_for(f"step 3/{STEPS}")  # checkpoint 2 is written, step 3 logged
    run.actor_process("LearnerRank").send_signal(signal.SIGKILL)
    assert run.finish() == 0, run.output[-4000:]
    assert "learner group lost after step 3" in run.output and "[relaunch 1 of 3]" in run.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["replay_mismatch"] == []
    [relaunch] = summary["relaunches"]
    assert relaunch["step"] == 3 and relaunch["to_step"] == 2 and "learner rank died" in relaunch["error"]
    # The weights a by-hand resume from checkpoint 2 reaches (the driver-killed test), and each step logged once.
    assert summary["weight_digests"]["rollouts"] == [summary["weight_digests"]["learner"]]
    assert summary["weight_digests"]["learner"] == reference["weight_digests"]["learner"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert rewards_by_step(uri, summary["mlflow_run_id"]) == reference_rewards
    assert metric_steps(uri, summary["mlflow_run_id"], "faults/learner_relaunches") == [4]


def test_a_learner_rank_lost_with_no_relaunch_left_is_a_named_error(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    run = Run(args_for(tiny_model, generated_data, out, **{"run.max_relaunches": 0}))
    run.wait_for(f"step 3/{STEPS}")
    run.actor_process("LearnerRank").send_signal(signal.SIGKILL)
    assert run.finish() != 0
    message = next(line for line in run.lines if line.startswith("preresq: "))
    assert "a learner rank died" in message and "run.max_relaunches = 0" in message
    assert "resumes from the newest checkpoint" in message
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FAILED" and "learner rank died" in summary["failure"]
    run_id = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())["mlflow_run_id"]
    assert run_status(f"sqlite:///{tmp_path / 'mlflow.db'}", run_id) == "FAILED"


def test_a_stuck_rollout_actor_is_a_named_timeout_not_a_hang(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    # 45 s: the first call also waits for the actor to load its model, which a slow machine takes a while for.
    run = Run(args_for(tiny_model, generated_data, out, **{"rollout.generate_timeout_s": 45,
                                                           "rollout.sync_timeout_s": 45}))
    run.wait_for(f"step 2/{STEPS}")
    stuck = run.actor_process("RolloutWorker")
    stuck.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert run.finish(timeout=240) != 0
        assert time.monotonic() - started < 150
    finally:
        try:
            stuck.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    message = next(line for line in run.lines if line.startswith("preresq: "))
    assert "rollout actor 0 did not answer within 45 s" in message
    assert ("rollout.generate_timeout_s" in message or "rollout.sync_timeout_s" in message), message


def test_resume_refuses_a_planted_file_and_a_pointer_outside_the_run(tiny_model, generated_data, tmp_path,
                                                                      uninterrupted):
    _, _, finished, _ = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    planted = latest / "deepspeed" / "state" / "payload.pt"
    planted.write_bytes(b"not what was committed")
    refused = run_cli(args_for(tiny_model, generated_data, out))
    assert refused.returncode != 0 and "preresq: cannot resume" in refused.stderr and str(planted) in refused.stderr

    planted.unlink()
    (out / "checkpoints" / "latest").write_text("../../elsewhere")
    refused = run_cli(args_for(tiny_model, generated_data, out))
    assert refused.returncode != 0 and "'../../elsewhere'" in refused.stderr
    assert "Started a local Ray" not in refused.stdout + refused.stderr  # refused before any actor starts


def test_a_checkpoint_that_cannot_be_written_ends_the_run_named_and_marked_failed(tiny_model, generated_data,
                                                                                  tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").write_text("a file where the checkpoint folder goes")  # every write into it fails
    result = run_cli(args_for(tiny_model, generated_data, out, **{"trainer.steps": 2, "trainer.checkpoint_every": 1}))
    assert result.returncode != 0
    message = next(line for line in result.stderr.splitlines() if line.startswith("preresq: "))
    assert f"could not write the checkpoint of step 1 into {out / 'checkpoints'}" in message
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FAILED"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("preresq").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_sigterm_checkpoints_marks_the_run_killed_and_the_rerun_ends_as_if_uninterrupted(
        tiny_model, generated_data, tmp_path, uninterrupted):
    reference, reference_rewards, *_ = uninterrupted
    out = tmp_path / "run"
    run = Run(args_for(tiny_model, generated_data, out))
    run.wait_for(f"step 3/{STEPS}")  # checkpoint 2 is written; step 4 is being generated or learned
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 143, run.output[-4000:]
    assert "SIGTERM: stopping at the next safe point" in run.output
    assert "preresq: stopped by SIGTERM after step" in run.output
    summary = json.loads((out / "summary.json").read_text())
    stopped = summary["step"]
    assert summary["status"] == "KILLED" and stopped in (3, 4)  # step 4 finishes only if it was learning
    assert (out / "checkpoints" / "latest").read_text() == f"step-{stopped:06d}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = json.loads((out / "checkpoints" / f"step-{stopped:06d}" / "trainer_state.json").read_text())
    assert run_status(uri, state["mlflow_run_id"]) == "KILLED"

    rerun = run_cli(args_for(tiny_model, generated_data, out))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"at step {stopped}" in rerun.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["replay_mismatch"] == []
    assert summary["weight_digests"]["learner"] == reference["weight_digests"]["learner"]
    assert rewards_by_step(uri, summary["mlflow_run_id"]) == reference_rewards  # each step once, the same values


def test_the_console_has_preresq_lines_only(uninterrupted):
    """No third-party warning or notice from the controller or any role reaches the console; numbers are rounded."""
    console = uninterrupted[3]
    assert not noise_in(console)
    validations = [line for line in console.splitlines() if " validation: SRCC " in line]
    assert validations and all(re.search(r"SRCC (-?\d\.\d{3}|undefined) PLCC (-?\d\.\d{3}|undefined) ", line)
                               for line in validations), validations
    assert re.search(rf"^step {STEPS}/{STEPS} .* eta 0m00s$", console, re.MULTILINE)
