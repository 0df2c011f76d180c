"""The learner side of vLLM's weight transfer (rollout.vllm.weight_sync: nccl | ipc).

vLLM's trainer engines own the data plane: NCCL broadcast from learner rank 0 to every rollout GPU when they
are separate, CUDA IPC handles when colocated, both in packed buffers of `transfer_buffer_bytes`. Its control
plane (init, start, update, finish) reaches the rollout actors (actors/rollout.py) through `RolloutEnginesClient`,
every call bounded. Every learner rank iterates the weights (under ZeRO-3 each parameter is gathered, a
collective); rank 0 sends.

What vLLM's own Ray client gets wrong for us, read in vLLM 0.32's source: it sends every engine the same init
payload, and a worker's NCCL rank is data_parallel_index x TP + its rank in the engine + rank_offset, with
data_parallel_index 0 in every independent engine (nccl_common.worker_init_process_group): with several engines
all claimed ranks 1..TP and the group never formed. `engine_init_payloads` gives engine i the offset 1 + i x TP.

GPU only: the data plane has not run here (no GPU, and vLLM's CPU build has no NCCL/IPC transfer). The CPU lane
runs the control plane with the data plane stubbed (tests/vllm_lane/test_weight_transfer.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from actors.calls import bounded_get


@dataclass(frozen=True)
class TransferSettings:
    """What the learner needs to reach the engines (from rollout.vllm and rollout.sync_timeout_s)."""

    backend: str  # nccl | ipc
    tensor_parallel_size: int
    rendezvous_timeout_s: float
    sync_timeout_s: float
    buffer_bytes: int


def engine_init_payloads(init_info: dict, engines: int, tensor_parallel_size: int) -> list[dict]:
    """vLLM's worker init payload for each of `engines` independent engines: with NCCL (a `rank_offset` in it)
    engine i's workers take ranks 1 + i x TP ... (i + 1) x TP of the group; IPC payloads carry no rank."""
    if "rank_offset" not in init_info:
        return [dict(init_info) for _ in range(engines)]
    return [{**init_info, "rank_offset": init_info["rank_offset"] + i * tensor_parallel_size}
            for i in range(engines)]


class RolloutEnginesClient:
    """vLLM's weight-sync client protocol over the rollout actors: each call fans out to every actor and waits
    for all of them, within rendezvous_timeout_s (init) or sync_timeout_s (the rest)."""

    def __init__(self, actors: list, settings: TransferSettings):
        self.actors, self.settings = actors, settings

    def _all(self, method: str, arguments: list[tuple], timeout_s: float, option: str) -> None:
        refs = [getattr(actor, method).remote(*args) for actor, args in zip(self.actors, arguments)]
        bounded_get(refs, timeout_s, f"rollout engines ({method})", option)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        payloads = engine_init_payloads(init_info, len(self.actors), self.settings.tensor_parallel_size)
        self._all("init_weight_transfer_engine", [(WeightTransferInitRequest(init_info=p),) for p in payloads],
                  self.settings.rendezvous_timeout_s, "rollout.vllm.rendezvous_timeout_s")

    def start_weight_update(self) -> None:
        self._all("start_weight_update", [()] * len(self.actors), self.settings.sync_timeout_s,
                  "rollout.sync_timeout_s")

    def update_weights(self, update_info) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        request = WeightTransferUpdateRequest(update_info=update_info)
        self._all("update_weights", [(request,)] * len(self.actors), self.settings.sync_timeout_s,
                  "rollout.sync_timeout_s")

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update", [()] * len(self.actors), self.settings.sync_timeout_s,
                  "rollout.sync_timeout_s")


def zero_source(module: torch.nn.Module, zero_stage: int, dtype: torch.dtype, record=None):
    """A vLLM WeightSource over a DeepSpeed module: Hugging Face names, full shapes, `dtype` on the wire; under
    LoRA each adapted weight merged (actors/lora.py). `record(sent, merged, trainable)`, when given, gets each
    pass's per-tensor checksums after and before the cast, and the trainable parameters' (models/weights)."""
    import deepspeed
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    from actors.lora import ADAPTER, is_adapted, merged_float, merged_named_parameters
    from models.weights import sample_checksum

    def entries():
        if is_adapted(module):
            return list(merged_named_parameters(module))
        return list(module.named_parameters())

    def full_shape(entry) -> tuple:
        param = entry.base_layer.weight if isinstance(entry, torch.nn.Module) else entry
        return tuple(getattr(param, "ds_shape", param.shape))  # ZeRO-3 keeps the full shape; the local is a shard

    class ZeroSource(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            return [ParamMeta(name, dtype, full_shape(entry)) for name, entry in entries()]

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            sent, merged, trainable = {}, {}, 0.0
            for name, entry in entries():
                layer = isinstance(entry, torch.nn.Module)
                params = list(entry.parameters()) if layer else [entry]
                with deepspeed.zero.GatheredParameters(params, enabled=zero_stage == 3):
                    full = merged_float(entry) if layer else entry.detach()
                    merged[name] = sample_checksum(full)
                    tensor = full.to(dtype).clone()  # a copy: the gathered storage is released when the block exits
                    moved = [entry.lora_B[ADAPTER].weight] if layer else [p for p in params if p.requires_grad]
                    trainable += sum(sample_checksum(p) for p in moved)  # as LearnerRank._trainable_checksum
                sent[name] = sample_checksum(tensor)
                yield name, tensor
            if record is not None:
                record(sent, merged, trainable)

    return ZeroSource()


def open_nccl_endpoint(master_address: str, master_port: int, world_size: int, timeout_s: float):
    """Rank 0 of the learner-and-engines NCCL group, waiting up to timeout_s for the engines' workers to join
    (vLLM's own helper waits a fixed 300 s)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup
    from vllm.utils.nccl import unpinned_nccl_env

    group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=0, world_size=world_size,
                                         store_timeout=int(timeout_s))
    with unpinned_nccl_env():
        return PyNcclCommunicator(group, device=torch.accelerator.current_device_index())


def start_trainer(settings: TransferSettings, rank: int, rollouts: list, master_address: str, master_port: int,
                  source):
    """The trainer engine on this learner rank, rendezvoused with every rollout engine (rank 0 drives it)."""
    client = RolloutEnginesClient(rollouts, settings)
    if settings.backend == "nccl":
        return nccl_trainer(client, settings, source, rank, master_address, master_port,
                            1 + len(rollouts) * settings.tensor_parallel_size)
    if settings.backend == "ipc":
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

        # Packed: one bounded buffer at a time instead of an IPC-shared copy of every tensor.
        info = IPCTrainerInitInfo(rank=rank, packed=True, packed_buffer_size_bytes=settings.buffer_bytes)
        return WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)
    raise ValueError(f"weight transfer backend {settings.backend!r} is not nccl or ipc")


def nccl_trainer(client, settings: TransferSettings, source, rank: int, master_address: str, master_port: int,
                 world_size: int):
    """vLLM's NCCL trainer engine, started as its own `trainer_init` does, with the rendezvous bounded by
    rollout.vllm.rendezvous_timeout_s; `client` (a RolloutEnginesClient) gives each engine its own ranks."""
    from vllm.distributed.weight_transfer.nccl_common import worker_init_payload
    from vllm.distributed.weight_transfer.nccl_engine import (
        NCCLTrainerWeightTransferEngine,
        NCCLWeightTransferInitInfo,
    )

    buffer_bytes = settings.buffer_bytes
    engine = NCCLTrainerWeightTransferEngine(client=client, source=source, is_sender=rank == 0, packed=True,
                                             packed_buffer_size_bytes=buffer_bytes)
    if rank != 0:  # other ranks only take part in the gathers of send_weights
        return engine
    workers = NCCLWeightTransferInitInfo(master_address=master_address, master_port=master_port, rank_offset=1,
                                         world_size=world_size, packed=True, packed_buffer_size_bytes=buffer_bytes)
    # The engines block in their init until the group forms: they are asked on a side thread while rank 0 opens it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        joined = pool.submit(client.init_weight_transfer_engine, worker_init_payload(workers))
        engine.model_update_group = open_nccl_endpoint(master_address, master_port, world_size,
                                                       settings.rendezvous_timeout_s)
        joined.result()
    return engine
