"""The GPU paths of the vLLM rollouts, checked where no GPU and no vLLM are needed: refused layouts, each
engine's NCCL ranks, the object-store reload staged per node. With vLLM installed: tests/vllm_lane/."""

from __future__ import annotations

import threading
import time

import pytest

from actors.weight_transfer import engine_init_payloads
from helpers import ROOT, base_config
from launch.trainer.config import ConfigError
from rollouts.vllm_backend import one_copy_per_node

GPU_VLLM = ("rollout.backend=vllm", "rollout.device=cuda", "trainer.verify_sync=false")


@pytest.mark.parametrize("overrides, reason", [
    (("rollout.vllm.tensor_parallel_size=2",), "placed on one GPU"),
    (("rollout.vllm.weight_sync=nccl", "placement.mode=colocated"), "refuses two ranks of one group on the same GPU"),
    (("rollout.vllm.weight_sync=ipc", "placement.mode=colocated", "rollout.num_actors=5"),
     "finds no IPC handle for its GPU"),
    (("rollout.top_k=20",), "renormalised over the kept tokens"),
    (("rollout.top_p=0.9",), "renormalised over the kept tokens"),
    (("rollout.vllm.transfer_buffer_bytes=1024",), "rollout.vllm.transfer_buffer_bytes"),
])
def test_a_vllm_layout_that_cannot_work_is_refused_with_its_reason(overrides, reason):
    with pytest.raises(ConfigError, match=reason):
        base_config(*GPU_VLLM, *overrides)


def test_the_shipped_gpu_layouts_pass_the_checks():
    for name in ("gpu-8.yaml", "gpu-2node.yaml", "gpu-1.yaml"):
        base_config(config_file=str(ROOT / "configs" / name))
    base_config(*GPU_VLLM, "rollout.vllm.weight_sync=ipc", "placement.mode=colocated", "rollout.num_actors=4")


@pytest.mark.parametrize("engines, tp", [(4, 1), (2, 2), (3, 4)])
def test_each_engine_gets_the_ranks_after_the_one_before(engines, tp):
    payloads = engine_init_payloads({"rank_offset": 1, "world_size": 1 + engines * tp}, engines, tp)
    # vLLM numbers an engine's worker: its rank in the engine + rank_offset (data-parallel index 0)
    ranks = sorted(p["rank_offset"] + r for p in payloads for r in range(tp))
    assert ranks == list(range(1, 1 + engines * tp))


def test_rollout_actors_of_one_node_write_their_weight_copies_in_turn(tmp_path):
    inside, overlaps, seen = [0], [], []

    def reload(name):
        with one_copy_per_node(str(tmp_path)):
            inside[0] += 1
            overlaps.append(inside[0])
            seen.append(name)
            time.sleep(0.05)
            inside[0] -= 1

    actors = [threading.Thread(target=reload, args=(i,)) for i in range(4)]
    for actor in actors:
        actor.start()
    for actor in actors:
        actor.join()
    assert sorted(seen) == [0, 1, 2, 3] and max(overlaps) == 1
