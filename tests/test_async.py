"""One-step-off generation (trainer.max_staleness 1), end to end on real Ray actors and DeepSpeed: the rollouts
answer the next batch while the learner trains, no batch is learned more than one weight version after the one
that sampled it (from the logged staleness), a preempted run resumes to the same weights, a
rollout actor killed mid-pipeline is restarted, a breach rolls back and finishes, and the overlap is real."""

from __future__ import annotations

import json
import os
import signal
import statistics
from pathlib import Path

import pytest
from test_mixed_run import mixed_manifest
from test_training_run import WRECKING, overrides

from helpers import Run, run_cli

pytestmark = pytest.mark.slow

STEPS = 6
ASYNC = {"trainer.steps": STEPS, "trainer.checkpoint_every": 2, "trainer.verify_sync": True,
         "trainer.max_staleness": 1, "algorithm.rollout_is": "truncated"}


def args_for(model: Path, data: Path, out: Path, **extra) -> list[str]:
    return ["launch/grpo.py", "--config", "configs/local.yaml", *overrides(model, data, out, **{**ASYNC, **extra})]


def history(out: Path, key: str, once: bool = True) -> dict[int, float]:
    """{step: value} of metric `key` of the run in `out` (once: each step logged once; else its last value)."""
    from mlflow.tracking import MlflowClient

    summary = json.loads((out / "summary.json").read_text())
    metrics = MlflowClient(f"sqlite:///{out.parent / 'mlflow.db'}").get_metric_history(summary["mlflow_run_id"], key)
    steps = [m.step for m in metrics]
    assert not once or len(steps) == len(set(steps)), f"{key}: a step was logged twice: {sorted(steps)}"
    return {m.step: m.value for m in sorted(metrics, key=lambda m: m.timestamp)}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, generated_data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("async") / "run"
    result = run_cli(args_for(tiny_model, generated_data, out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"out": out, "summary": json.loads((out / "summary.json").read_text()), "stdout": result.stdout}


def test_each_batch_is_learned_one_version_after_the_one_that_sampled_it(uninterrupted):
    summary, out = uninterrupted["summary"], uninterrupted["out"]
    assert summary["status"] == "FINISHED"
    assert summary["weight_digests"]["rollouts"] == [summary["weight_digests"]["learner"]]
    # Step 1's batch is sampled in its own step; every later one during the step before, by the weights before it.
    assert history(out, "trainer/staleness") == {1: 0.0, **{step: 1.0 for step in range(2, STEPS + 1)}}
    assert set(history(out, "time/generate_ahead")) == set(range(1, STEPS))  # the last step samples nothing ahead
    assert all(history(out, "learner/is_weight").values())  # the stale answers are importance-weighted
    # The last checkpoint has nothing sampled ahead: there is no step after it.
    state = json.loads((out / "checkpoints" / f"step-{STEPS:06d}" / "trainer_state.json").read_text())
    assert state["ahead"] is None
    # local.yaml's 2 rollout + 2 learner threads, working at once, crowd a machine of fewer than 4 cores: said.
    crowded = "torch threads of its" in uninterrupted["stdout"]
    assert crowded == ((os.cpu_count() or 1) < 4), uninterrupted["stdout"][-2000:]


def test_a_preempted_run_resumes_to_the_same_weights(tiny_model, generated_data, tmp_path, uninterrupted):
    # A SIGTERM abandons a step that is not yet learning: its batch (sampled ahead) stays the one to learn, the
    # next one's submitted draw is undone. Either way the checkpoint keeps the batch sampled ahead of its step.
    cut = tmp_path / "run"
    run = Run(args_for(tiny_model, generated_data, cut))
    run.wait_for(f"step 3/{STEPS}")
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == 143, run.output[-4000:]
    stopped = json.loads((cut / "summary.json").read_text())["step"]
    assert (cut / "checkpoints" / "latest").read_text() == f"step-{stopped:06d}"
    ahead = json.loads((cut / "checkpoints" / f"step-{stopped:06d}" / "trainer_state.json").read_text())["ahead"]
    # sampled during step `stopped`, by the weights before it; learned at staleness 1 after the resume
    assert ahead["step"] == stopped + 1 and ahead["version"] == stopped - 1 and len(ahead["answers"]) == 4
    rerun = run_cli(args_for(tiny_model, generated_data, cut))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"at step {stopped}" in rerun.stdout
    digests = json.loads((cut / "summary.json").read_text())["weight_digests"]
    expected = uninterrupted["summary"]["weight_digests"]["learner"]
    assert digests["learner"] == expected and digests["rollouts"] == [expected]
    assert history(cut, "reward/total") == history(uninterrupted["out"], "reward/total")


def test_a_rollout_actor_killed_mid_pipeline_is_restarted_and_the_weights_verified(tiny_model, tmp_path):
    # On a manifest of images, clips and broken media, with two learner ranks: the restarted actor gets the
    # newest weights and redoes its share of the batch in flight; the unreadable media are skipped and named.
    manifest, bad = mixed_manifest(tmp_path)
    out = tmp_path / "run"
    run = Run(["launch/grpo.py", "--config", "configs/local.yaml",
               *overrides(tiny_model, manifest, out, **{**ASYNC, "learner.num_ranks": 2, "data.eval_limit": 12})])
    run.wait_for(f"step 3/{STEPS}")
    run.actor_process("RolloutWorker").send_signal(signal.SIGKILL)
    assert run.finish() == 0, run.output[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["rollout_restarts"] == 1
    assert summary["weight_digests"]["rollouts"] == [summary["weight_digests"]["learner"]]
    assert len(summary["learner_ranks"]) == 2
    assert {p.rsplit("/", 1)[-1] for p in summary["skipped_media"]} == {n for n, (_, ok) in bad.items() if not ok}
    assert max(history(out, "trainer/staleness").values()) <= 1


def test_a_breach_rolls_back_drops_the_batch_sampled_ahead_and_finishes(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    result = run_cli(args_for(tiny_model, generated_data, out, **{
        **WRECKING, "health.lr_factor": 0.01, "health.max_rollbacks": 2, "health.min_scored": 0.5,
        "trainer.checkpoint_every": 100}))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["rollbacks"], summary
    target = summary["rollbacks"][0]["to_step"]
    staleness = history(out, "trainer/staleness", once=False)
    # After the rollback the first redone step samples its own batch (the one sampled ahead came from weights the
    # run left); later ones are one step off again, and none is more.
    assert staleness[target + 1] == 0.0 and max(staleness.values()) <= 1
    assert sorted(staleness) == list(range(1, WRECKING["trainer.steps"] + 1))


def median_step_seconds(out: Path) -> float:
    seconds = history(out, "time/step")
    return statistics.median(seconds[step] for step in sorted(seconds)[2:])


def test_generation_overlaps_learning(tiny_model, generated_data, tmp_path):
    # Each generate and each learner step made to take 0.3 s (actors/call_hooks.py): in turn a step takes at
    # least 0.6 s, one step off about 0.3 s plus the reward and the sync.
    env = {"PRERESQ_CALL_SECONDS": "generate=0.3,train_step=0.3"}
    # One thread per role: side by side at 2 + 2 on 2 cores, the learner's step took up to 1.2 s (measured).
    # 12 steps, medians of 10: a few seconds of other load on the machine spoil a few steps, not the median.
    common = {"trainer.steps": 12, "trainer.checkpoint_every": 100, "trainer.verify_sync": False,
              "rollout.max_new_tokens": 8, "trainer.batch_size": 2, "rollout.group_size": 2,
              "rollout.threads": 1, "learner.threads": 1}
    timed = {}
    for depth in (0, 1):
        out = tmp_path / f"depth-{depth}"
        result = run_cli(args_for(tiny_model, generated_data, out, **common, **{"trainer.max_staleness": depth}),
                         env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        timed[depth] = median_step_seconds(out)
    assert timed[0] >= 0.6, timed
    assert timed[1] <= 0.6 * timed[0], timed
