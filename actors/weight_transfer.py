"""The learner side of vLLM's weight transfer (rollout.vllm.weight_sync: nccl | ipc).

vLLM's trainer engine (`WeightTransferTrainerFactory`) owns the transport: NCCL broadcast from
learner rank 0 to every rollout GPU when they are separate, CUDA IPC handles when colocated. It
drives the rollout actors' init/start/update/finish methods (actors/rollout.py) through Ray, so no
process group of our own sits beside vLLM's. Every learner rank iterates the weights (under ZeRO-3
each parameter is gathered, a collective); rank 0 sends.

GPU only: this path has not run here (no GPU, and vLLM's CPU build has no NCCL/IPC transfer). The
CPU test lane covers the object-store sync instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def zero_source(module: torch.nn.Module, zero_stage: int, dtype: torch.dtype):
    """A vLLM WeightSource over a DeepSpeed module: Hugging Face names, full shapes, `dtype` on the wire."""
    import deepspeed
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class ZeroSource(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            # ZeRO-3 keeps the full shape in ds_shape; the local tensor is a shard.
            return [ParamMeta(name, dtype, tuple(getattr(p, "ds_shape", p.shape)))
                    for name, p in module.named_parameters()]

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            for name, param in module.named_parameters():
                with deepspeed.zero.GatheredParameters([param], enabled=zero_stage == 3):
                    # A copy: the gathered storage is released when the block exits.
                    yield name, param.detach().to(dtype).clone()

    return ZeroSource()


def start_trainer(backend: str, rank: int, rollouts: list, master_address: str, master_port: int,
                  inference_workers: int, source):
    """The trainer engine on this learner rank, rendezvoused with the rollout actors (rank 0 drives it).

    inference_workers: GPUs across all rollout engines (actors x tensor parallel size).
    """
    from vllm.distributed.weight_transfer.clients import RayVLLMWeightSyncClient
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    if backend == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        info = NCCLTrainerInitInfo(master_address=master_address, master_port=master_port,
                                   world_size=1 + inference_workers, rank=rank)
    elif backend == "ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

        info = IPCTrainerInitInfo(rank=rank)
    else:
        raise ValueError(f"weight transfer backend {backend!r} is not nccl or ipc")
    return WeightTransferTrainerFactory.trainer_init(info, client=RayVLLMWeightSyncClient(rollouts), source=source)
