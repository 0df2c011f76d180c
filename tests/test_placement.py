"""Placement of the roles: the bundle arithmetic (pure), and a real step inside a placement group."""

from __future__ import annotations

import json

import pytest
from test_training_run import overrides

from actors.placement import plan
from helpers import run_cli


def test_separate_gives_each_role_its_own_gpus():
    p = plan("separate", rollouts=2, learners=4, rollout_gpu=True, learner_cpus=2, learner_gpus=1,
             colocated_rollout_share=0.5)
    assert p.bundles == [{"CPU": 1.0, "GPU": 1.0}] * 2 + [{"CPU": 2.0, "GPU": 1.0}] * 4
    assert [s.bundle for s in p.rollouts] == [0, 1] and [s.bundle for s in p.learners] == [2, 3, 4, 5]
    assert sum(b.get("GPU", 0) for b in p.bundles) == 6


def test_colocated_shares_one_gpu_per_slot():
    p = plan("colocated", rollouts=4, learners=4, rollout_gpu=True, learner_cpus=1, learner_gpus=1,
             colocated_rollout_share=0.3)
    assert p.bundles == [{"CPU": 2.0, "GPU": 1.0}] * 4
    assert [(s.bundle, s.num_gpus) for s in p.rollouts] == [(i, 0.3) for i in range(4)]
    assert [(s.bundle, s.num_gpus) for s in p.learners] == [(i, pytest.approx(0.7)) for i in range(4)]


def test_cpu_bundles_and_no_placement():
    assert plan("separate", 1, 1, False, 1, 0, 0.5).bundles == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert plan("none", 1, 2, False, 1, 0, 0.5).bundles == []
    with pytest.raises(ValueError, match="placement mode 'spread'"):
        plan("spread", 1, 1, False, 1, 0, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["separate", "colocated"])
def test_a_step_runs_inside_the_placement_group(tiny_model, generated_data, tmp_path, mode):
    out = tmp_path / "run"
    args = overrides(tiny_model, generated_data, out, **{"trainer.steps": 1, "placement.mode": mode,
                                                          "data.eval_limit": 4})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    placement = json.loads((out / "summary.json").read_text())["placement"]
    assert placement["state"] == "CREATED" and placement["mode"] == mode
    expected = [{"CPU": 1.0}, {"CPU": 1.0}] if mode == "separate" else [{"CPU": 2.0}]
    assert placement["bundles"] == expected
    assert placement["rollout_bundles"] == [0] and placement["learner_bundles"] == [1 if mode == "separate" else 0]
    assert "placement group" in result.stdout


@pytest.mark.slow
def test_a_cluster_too_small_fails_naming_the_bundles(tiny_model, generated_data, tmp_path):
    out = tmp_path / "run"
    args = overrides(tiny_model, generated_data, out, **{"placement.mode": "separate", "learner.num_ranks": 2,
                                                          "ray.num_cpus": 2, "learner.cpus_per_rank": 2,
                                                          "placement.timeout_s": 5})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args], timeout=300)
    assert result.returncode != 0
    assert "could not be reserved" in result.stderr and "'CPU': 2.0" in result.stderr
