"""vLLM's weight transfer as far as a CPU allows (`make test-vllm`): the control plane for real, the data plane
(NCCL sockets and communicators, CUDA IPC) stubbed.

- NCCL ranks: the learner's trainer engine (actors/weight_transfer.py) starts against real Ray actors, each
  running vLLM's own worker-side NCCL engine init for the workers of one engine (TP of them); with the
  communicator stubbed, the ranks they claim must be distinct and cover 1 .. world_size - 1. vLLM's own Ray
  client, given the same engines, makes them collide (the bug this client fixes).
- IPC: an update payload of CUDA IPC handles' shape through vLLM's msgpack channel, with and without the
  environment the rollout backend sets before its engine starts.
- Sleep and wake by tags, against vLLM's own executor bookkeeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from actors.weight_transfer import RolloutEnginesClient, TransferSettings, engine_init_payloads, nccl_trainer
from helpers import ROOT
from rollouts.vllm_backend import VLLMRolloutBackend, engine_environment

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` builds its environment")
ray = pytest.importorskip("ray")


class EngineWorkers:
    """The workers of one vLLM engine with `tp` GPUs: each runs vLLM's NCCL weight-transfer engine init, with the
    data plane (the process group and its communicator) replaced by a record of the rank it asks for."""

    def __init__(self, tp: int):
        self.tp, self.joined = tp, []

    def init_weight_transfer_engine(self, request) -> None:
        from unittest import mock

        from vllm.config import WeightTransferConfig
        from vllm.distributed.weight_transfer import nccl_common
        from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine

        def group(master_address, master_port, rank, world_size, device):
            self.joined.append((rank, world_size))

        with mock.patch.object(nccl_common, "stateless_init_process_group", group), \
                mock.patch.object(torch.accelerator, "current_device_index", lambda: 0):
            for tp_rank in range(self.tp):
                # Every independent engine has data-parallel index 0 (vLLM's own numbering).
                parallel = SimpleNamespace(data_parallel_index=0, world_size=self.tp, rank=tp_rank)
                worker = NCCLWeightTransferEngine(WeightTransferConfig(backend="nccl"),
                                                  SimpleNamespace(parallel_config=parallel, model_config=None),
                                                  torch.device("cpu"), None)
                worker.init_transfer_engine(worker.parse_init_info(request.init_info))

    def ranks(self) -> list[tuple[int, int]]:
        return self.joined


@pytest.fixture(scope="module")
def local_ray():
    # The actor class lives in this test module, which Ray's workers cannot import: it travels by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("engines, tp", [(4, 1), (2, 2)])
def test_every_engine_worker_joins_the_nccl_group_with_a_rank_of_its_own(local_ray, monkeypatch, engines, tp):
    import actors.weight_transfer as transfer

    actors = [ray.remote(num_cpus=0)(EngineWorkers).remote(tp) for _ in range(engines)]
    settings = TransferSettings("nccl", tp, rendezvous_timeout_s=60, sync_timeout_s=60, buffer_bytes=1 << 20)
    opened = []
    monkeypatch.setattr(transfer, "open_nccl_endpoint", lambda *args: opened.append(args) or "rank-0 communicator")
    world = 1 + engines * tp
    engine = nccl_trainer(RolloutEnginesClient(actors, settings), settings, source=object(), rank=0,
                          master_address="127.0.0.1", master_port=29999, world_size=world)
    assert engine.model_update_group == "rank-0 communicator" and opened == [("127.0.0.1", 29999, world, 60)]
    joined = [pair for ranks in ray.get([a.ranks.remote() for a in actors]) for pair in ranks]
    assert sorted(rank for rank, _ in joined) == list(range(1, world))
    assert {size for _, size in joined} == {world}

    # vLLM's own Ray client sends every engine the same payload: their workers claim the same ranks.
    from vllm.distributed.weight_transfer.clients import RayVLLMWeightSyncClient

    fresh = [ray.remote(num_cpus=0)(EngineWorkers).remote(tp) for _ in range(engines)]
    nccl_trainer(RayVLLMWeightSyncClient(fresh), settings, source=object(), rank=0, master_address="127.0.0.1",
                 master_port=29999, world_size=world)
    theirs = [rank for ranks in ray.get([a.ranks.remote() for a in fresh]) for rank, _ in ranks]
    assert len(set(theirs)) == tp < len(theirs)


def test_ipc_payloads_carry_no_rank():
    assert engine_init_payloads({"packed": True}, 3, 1) == [{"packed": True}] * 3


# An update whose handles have the shape torch's CUDA IPC reduction gives (rebuild_cuda_tensor's arguments):
# classes, a dtype and bytes, which msgpack cannot carry natively.
ROUND_TRIP = """
import json, sys, torch
from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder
handle = (torch.Tensor, torch.Size([2, 3]), (3, 1), 0, torch.storage.UntypedStorage, torch.bfloat16, 0,
          b"\\x01" * 64, 12, 0, False, b"\\x02" * 16, 0, b"\\x03" * 64, True)
request = WeightTransferUpdateRequest(update_info={"names": ["w"], "dtype_names": ["bfloat16"], "shapes": [[2, 3]],
                                                   "ipc_handles": [{"GPU-0": handle}], "tensor_sizes": [12]})
try:
    back = MsgpackDecoder(WeightTransferUpdateRequest).decode(MsgpackEncoder().encode(request))
except TypeError as error:
    print(json.dumps({"error": str(error)}))
    sys.exit(0)
# msgpack gives sequences back as lists (rebuild_cuda_tensor takes them so); classes, dtype and bytes by pickle
plain = [list(x) if isinstance(x, tuple) else x for x in handle]
print(json.dumps({"same": list(back.update_info["ipc_handles"][0]["GPU-0"]) == plain}))
"""


@pytest.mark.parametrize("weight_sync", ["ipc", "nccl"])
def test_an_ipc_update_crosses_vllms_msgpack_channel_only_with_the_backends_environment(weight_sync):
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ALLOW_INSECURE_SERIALIZATION"}
    env.update(engine_environment(SimpleNamespace(weight_sync=weight_sync)))
    result = subprocess.run([sys.executable, "-c", ROUND_TRIP], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if weight_sync == "ipc":
        assert outcome == {"same": True}
    else:  # without the fallback vLLM refuses the handles' classes (nccl sends none)
        assert "not serializable" in outcome["error"]


class ExecutorTags:
    """vLLM's executor-level sleep bookkeeping (its own methods), the workers' calls recorded."""

    from vllm.v1.executor.abstract import Executor

    is_sleeping, sleep, wake_up = Executor.is_sleeping, Executor.sleep, Executor.wake_up

    def __init__(self):
        self.sleeping_tags: set[str] = set()
        self.calls: list = []

    def collective_rpc(self, method, kwargs=None):
        self.calls.append((method, kwargs))


def test_a_sync_that_failed_half_way_leaves_nothing_asleep_at_the_next_generate():
    backend = VLLMRolloutBackend.__new__(VLLMRolloutBackend)  # the tag logic alone, no engine
    backend.llm = ExecutorTags()
    backend.llm.sleep(level=1)  # after a generate with rollout.vllm.sleep
    backend.sleeping = {"weights", "kv_cache"}
    backend.wake(["weights"])  # a sync starts, and fails before its after_sync wakes the KV cache
    backend.wake(["weights", "kv_cache"])  # the next generate
    assert backend.llm.sleeping_tags == set() and backend.sleeping == set()
    assert [c for c in backend.llm.calls if c[0] == "wake_up"] == [("wake_up", {"tags": ["weights"]}),
                                                                    ("wake_up", {"tags": ["kv_cache"]})]
    backend.wake(["weights", "kv_cache"])  # awake: nothing is asked of the engine
    assert len(backend.llm.calls) == 3
