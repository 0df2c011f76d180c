"""A GPU layout rehearsed on a real multi-node Ray cluster on this machine (configs/rehearsal.yaml): submitted
with `ray job submit` as docs/cluster.md tells users, the learner ranks on two nodes in one ZeRO-3 group, the rollout
actor on a third, and the rollout's weights equal to the learner's at the end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import rewards_by_step
from test_training_run import overrides

from helpers import ROOT, Run
from launch.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster():
    """A head and three worker nodes of 1 CPU and 1 declared GPU each (one fixture serves the module's tests)."""
    nodes = LocalCluster(workers=3, gpus=1, cpus=1, dashboard_port=8296)
    try:
        yield nodes
    finally:
        nodes.stop()


def start_job(cluster: LocalCluster, args: list[str]) -> Run:
    """`ray job submit --working-dir . -- python launch/grpo.py ARGS` to the cluster's head, in the background."""
    submit = ["job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--", "python",
              "launch/grpo.py", *args]
    for _ in range(12):  # the head's job agent registers some seconds (on a loaded machine, a minute) after start
        job = Run(submit, env=cluster.env, program=str(Path(sys.executable).parent / "ray"))
        while job.process.poll() is None and "submitted successfully" not in job.output:
            time.sleep(0.2)
        if job.process.poll() is not None:
            job.finish()  # every line of it read
        if "No available agent to submit job" not in job.output:
            return job
        time.sleep(10)
    return job


def test_a_local_run_starts_a_ray_of_its_own_beside_a_running_cluster(cluster):
    """Ray's plain init would join the newest cluster it finds on the machine (this one): a run without an address
    must not."""
    probe = ("from actors.ray_connection import connect_ray; import ray; connect_ray(None, 1); "
             "print('nodes', len(ray.nodes()))")
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "local Ray at" in result.stdout and "nodes 1" in result.stdout
    assert cluster.address not in result.stdout


def test_the_rehearsal_layout_spans_three_nodes_and_ends_with_the_learners_weights(
        cluster, tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    args = ["--config", "configs/rehearsal.yaml",
            *overrides(tiny_model, generated_data, out, **{"trainer.steps": 2, "rollout.threads": 1})]
    job = start_job(cluster, args)
    assert job.finish(timeout=900) == 0, job.output[-6000:]
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


def test_a_rollout_node_then_a_learner_node_die_and_the_run_goes_on_by_itself(
        cluster, tiny_model, generated_data, tmp_path):
    """Every process of a worker node SIGKILLed, twice, and a replacement node joining each time: the rollout
    actor is restarted on the new node and resynced; the learner group is relaunched from the newest checkpoint."""
    out, steps = tmp_path / "run", 12
    args = ["--config", "configs/rehearsal.yaml",
            *overrides(tiny_model, generated_data, out, **{"trainer.steps": steps, "trainer.checkpoint_every": 2,
                                                          "rollout.threads": 1})]
    job = start_job(cluster, args)
    job.wait_for("roles' nodes:")
    line = next(line for line in job.lines if line.startswith("roles' nodes:"))
    *learners, rollout, _ = re.findall(r"'?([0-9a-f]{12})'?", line)
    job.wait_for(f"step 2/{steps}")
    lost = [cluster.kill_node(rollout)]
    cluster.add_worker()
    job.wait_for(f"step 4/{steps}")
    lost.append(cluster.kill_node(learners[0]))
    cluster.add_worker()
    assert job.finish(timeout=600) == 0, job.output[-6000:]
    assert "Ray restarts it and its work is redone" in job.output and "learner group relaunched" in job.output

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["rollout_restarts"] >= 1
    [relaunch] = summary["relaunches"]
    # From the newest checkpoint (every 2 steps; the loss may cut one short while it is written).
    assert relaunch["step"] >= 4 and relaunch["step"] - 2 <= relaunch["to_step"] <= relaunch["step"]
    assert relaunch["to_step"] % 2 == 0 and "learner rank died" in relaunch["error"]
    nodes = summary["nodes"]
    assert not set(lost) & {*nodes["learners"], *nodes["rollouts"]}  # the roles live on the replacement nodes
    assert len(set(nodes["learners"])) == 2 and nodes["rollouts"][0] not in nodes["learners"]
    digests = summary["weight_digests"]
    assert digests["rollouts"] == [digests["learner"]]
    logged = rewards_by_step(f"sqlite:///{tmp_path / 'mlflow.db'}", summary["mlflow_run_id"])  # each step once
    assert sorted(logged) == list(range(1, steps + 1))
