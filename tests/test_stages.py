"""The paper's two stages over two datasets in one run, with dynamic sampling on: per-dataset validation, the stage
in every step's metrics and in the checkpoint, and a run killed at the stage boundary resumes to the same weights.
"""

from __future__ import annotations

import json
import signal

import pytest
from test_training_run import overrides

from helpers import Run, run_cli
from launch.build_manifest import main as build_manifest
from qadata.manifest import read_manifest, write_manifest

pytestmark = pytest.mark.slow

STAGES = ("[{name: explore, steps: 2, overrides: {data: {question: pool}, algorithm: {dynamic_sampling: "
          "{enabled: true, min_reward_std: 0.1, max_extra_items: 4}}}}, {name: settle, steps: 2}]")


@pytest.fixture(scope="module")
def two_datasets(generated_data, tmp_path_factory):
    """The generated set as two datasets (alternate training rows; 4 test items each), merged by the command."""
    folder = tmp_path_factory.mktemp("two")
    frame = read_manifest(generated_data)
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    parts = []
    for k, name in enumerate(("gen-a", "gen-b")):
        part = write_manifest(
            frame.loc[[*train.index[k::2], *test.index[4 * k: 4 * k + 4]]].assign(dataset=name)[
                ["path", "mos", "dataset", "split", "kind"]], folder / f"{name}.parquet")
        parts.append(str(part))
    build_manifest(["--merge", *parts, "--out", str(folder / "merged.parquet")])
    return folder / "merged.parquet"


def args_for(model, manifest, out) -> list[str]:
    settings = {"trainer.steps": 4, "trainer.checkpoint_every": 2, "trainer.verify_sync": True,
                "rollout.max_new_tokens": 48, "data.eval_limit": None,
                "trainer.stages": STAGES, "data.mix": "{gen-a: 1.0, gen-b: 2.0}", "reward.preference_scope": "dataset"}
    return ["launch/grpo.py", "--config", "configs/local.yaml",
            *[a for a in overrides(model, manifest, out, **settings) if not a.startswith("data.eval_limit")]]


def test_two_stages_over_two_datasets_resume_across_the_boundary_to_the_same_weights(tiny_model, two_datasets,
                                                                                      tmp_path):
    from mlflow.tracking import MlflowClient

    whole = tmp_path / "whole"
    result = run_cli(args_for(tiny_model, two_datasets, whole))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stage 1/2 (explore): steps 1-2, data.question=pool" in result.stdout
    assert "stage 2/2 (settle): steps 3-4" in result.stdout
    reference = json.loads((whole / "summary.json").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = reference["mlflow_run_id"]

    def history(key):
        return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]

    assert history("trainer/stage") == [1.0, 1.0, 2.0, 2.0]
    assert len(history("dynamic/extra_items")) == 2  # the first stage's steps only
    for name in ("gen-a", "gen-b"):  # before and after
        assert history(f"val/{name}/items") == [4.0, 4.0], name
    assert "gen-a SRCC" in result.stdout and "gen-b SRCC" in result.stdout
    states = [json.loads((whole / "checkpoints" / f"step-00000{s}" / "trainer_state.json").read_text()) for s in (2, 4)]
    assert [state["stage"] for state in states] == [1, 2]
    assert set(states[1]["sampler"]["datasets"]) == {"gen-a", "gen-b"}

    # Killed after the boundary's checkpoint (step 2), while stage 2 runs; the rerun resumes inside stage 1's end.
    cut = tmp_path / "cut"
    run = Run(args_for(tiny_model, two_datasets, cut))
    run.wait_for("step 3/4")
    run.process.send_signal(signal.SIGKILL)
    run.finish()
    assert (cut / "checkpoints" / "latest").read_text() == "step-000002"
    assert json.loads((cut / "checkpoints" / "step-000002" / "trainer_state.json").read_text())["stage"] == 1
    rerun = run_cli(args_for(tiny_model, two_datasets, cut))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "at step 2" in rerun.stdout and "stage 2/2 (settle)" in rerun.stdout
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["weight_digests"]["learner"] == reference["weight_digests"]["learner"]
    assert summary["weight_digests"]["rollouts"] == [summary["weight_digests"]["learner"]]
