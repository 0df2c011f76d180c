"""A GPU layout rehearsed on a real multi-node Ray cluster on this machine (configs/rehearsal.yaml): submitted
with `ray job submit` as the README tells users, the learner ranks on two nodes in one ZeRO-3 group, the rollout
actor on a third, and the rollout's weights equal to the learner's at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_training_run import overrides

from helpers import ROOT, LocalCluster


@pytest.fixture(scope="module")
def cluster():
    """A head and three worker nodes of 1 CPU and 1 declared GPU each (one fixture serves the module's tests)."""
    nodes = LocalCluster(workers=3, gpus=1, cpus=1, dashboard_port=8296)
    try:
        yield nodes
    finally:
        nodes.stop()


def submit(cluster: LocalCluster, args: list[str]) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", cluster.dashboard,
               "--working-dir", ".", "--", "python", "launch/grpo.py", *args]
    for _ in range(6):  # the head's job agent registers some seconds after the cluster is up
        result = subprocess.run(command, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=900)
        if "No available agent to submit job" not in result.stdout + result.stderr:
            return result
        time.sleep(10)
    return result


def test_the_rehearsal_layout_spans_three_nodes_and_ends_with_the_learners_weights(
        cluster, tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    args = ["--config", "configs/rehearsal.yaml",
            *overrides(tiny_model, generated_data, out, **{"trainer.steps": 2, "rollout.threads": 1})]
    result = submit(cluster, args)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["placement"]["strategy"] == "STRICT_SPREAD"
    nodes = summary["nodes"]
    learners, rollout = nodes["learners"], nodes["rollouts"][0]
    assert len(set(learners)) == 2 and rollout not in learners  # three nodes: weights crossed between them
    head = cluster.cluster.head_node.node_id
    assert head not in [*learners, rollout]  # the head declares no GPU: no GPU bundle lands there
    digests = summary["weight_digests"]
    assert digests["rollouts"] == [digests["learner"]]
    shares = [r["reference_params_held"] / r["reference_params"] for r in summary["learner_ranks"]]
    assert len(shares) == 2 and all(0.45 < share < 0.55 for share in shares)  # ZeRO-3 across the two nodes
