"""Starting the roles as Ray actors from a run's config, and driving the learner group together."""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray
from omegaconf import OmegaConf

from actors.learner import LearnerRank, LearnerSettings
from actors.placement import Plan, Slot, actor_options, plan, reserve
from actors.reward import RewardWorker
from actors.rollout import RolloutWorker
from rewards.prpo import PRPOWeights


def connect_ray(address: str | None, num_cpus: int) -> None:
    """Join the cluster at `address` or RAY_ADDRESS (as under `ray job submit`), else start a local Ray."""
    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def learner_settings(cfg) -> LearnerSettings:
    per_rank = cfg.trainer.batch_size * cfg.rollout.group_size // cfg.learner.num_ranks
    algo = cfg.algorithm
    return LearnerSettings(
        model_path=cfg.model.path,
        dtype=cfg.model.dtype,
        device=cfg.learner.device,
        zero_stage=cfg.learner.zero_stage,
        comm_backend=cfg.learner.comm_backend,
        lr=cfg.learner.lr,
        weight_decay=cfg.learner.weight_decay,
        betas=tuple(cfg.learner.betas),
        grad_clip=cfg.learner.grad_clip,
        # Micro-batches must tile the rank's answers exactly for DeepSpeed's accumulation boundary.
        micro_batch=largest_divisor_at_most(per_rank, cfg.learner.micro_batch),
        samples_per_rank=per_rank,
        temperature=cfg.rollout.temperature,
        clip_low=algo.clip_low,
        clip_high=algo.clip_high,
        kl_coef=algo.kl_coef,
        kl_estimator=algo.kl_estimator,
        loss_aggregation=algo.loss_aggregation,
        rollout_is_cap=algo.rollout_is_cap if algo.rollout_is == "truncated" else None,
        min_pixels=cfg.model.min_pixels,
        max_pixels=cfg.model.max_pixels,
        threads=cfg.learner.threads,
        seed=cfg.run.seed,
    )


class LearnerGroup:
    """N LearnerRank actors forming one DeepSpeed data-parallel group."""

    def __init__(self, cfg, slots: list[Slot] | None = None, group=None):
        settings = learner_settings(cfg)
        world = cfg.learner.num_ranks
        slots = slots or plan("none", 0, world, False, cfg.learner.cpus_per_rank, learner_gpus(cfg)).learners
        actor = ray.remote(LearnerRank)
        self.ranks = [actor.options(**actor_options(slots[rank], group)).remote(settings, rank, world)
                      for rank in range(world)]
        addr, port = ray.get(self.ranks[0].address.remote())
        self.ranks_info = ray.get([r.setup.remote(addr, port) for r in self.ranks])

    def train_step(self, shards: list[list], lr: float | None = None) -> list[dict]:
        return ray.get([r.train_step.remote(shard, lr) for r, shard in zip(self.ranks, shards)])

    def full_weights(self) -> ray.ObjectRef:
        """ObjectRef of rank 0's gathered weights (every rank takes part in the gather)."""
        refs = [r.full_weights.remote() for r in self.ranks]
        ray.wait(refs, num_returns=len(refs))
        return refs[0]

    def weights_digest(self) -> str:
        return ray.get([r.weights_digest.remote() for r in self.ranks])[0]

    def connect_rollouts(self, backend: str, rollouts: list, inference_workers: int) -> None:
        """vLLM weight transfer from rank 0 to the rollout engines (nccl | ipc)."""
        address, port = ray.get(self.ranks[0].address.remote())
        ray.get([r.connect_rollouts.remote(backend, rollouts, address, port, inference_workers) for r in self.ranks])

    def send_weights(self, timeout_s: float) -> None:
        ray.get([r.send_weights.remote() for r in self.ranks], timeout=timeout_s)

    def save_checkpoint(self, folder: str, tag: str) -> None:
        ray.get([r.save_checkpoint.remote(folder, tag) for r in self.ranks])

    def load_checkpoint(self, folder: str, tag: str) -> None:
        ray.get([r.load_checkpoint.remote(folder, tag) for r in self.ranks])

    def save_pretrained(self, folder: str) -> None:
        ray.get([r.save_pretrained.remote(folder) for r in self.ranks])


def rollout_actors(count: int, backend: str, model_path: str, dtype: str, device: str, prompt_chunk: int,
                   min_pixels: int | None, max_pixels: int | None, threads: int,
                   slots: list[Slot] | None = None, group=None, vllm: dict | None = None) -> list:
    """`count` RolloutWorker actors, one GPU each unless on CPU (or as `slots` place them).

    vllm: VLLMSettings fields when backend is vllm."""
    slots = slots or plan("none", count, 0, device != "cpu", 0, 0).rollouts
    actor = ray.remote(RolloutWorker)
    return [
        actor.options(**actor_options(slots[i], group)).remote(
            backend, model_path, dtype, device, prompt_chunk, min_pixels, max_pixels, threads, vllm)
        for i in range(count)
    ]


def learner_gpus(cfg) -> float:
    return cfg.learner.gpus_per_rank if cfg.learner.device != "cpu" else 0.0


def role_plan(cfg) -> Plan:
    return plan(cfg.placement.mode, cfg.rollout.num_actors, cfg.learner.num_ranks, cfg.rollout.device != "cpu",
                cfg.learner.cpus_per_rank, learner_gpus(cfg), cfg.placement.colocated_rollout_share)


def start_rollouts(cfg, slots: list[Slot] | None = None, group=None) -> list:
    r, m = cfg.rollout, cfg.model
    vllm = {**OmegaConf.to_container(r.vllm), "sync_timeout_s": r.sync_timeout_s} if r.backend == "vllm" else None
    return rollout_actors(r.num_actors, r.backend, m.path, m.dtype, r.device, r.prompt_chunk, m.min_pixels,
                          m.max_pixels, r.threads, slots, group, vllm)


def start_reward(cfg):
    r = cfg.reward
    weights = PRPOWeights(
        std_margin=r.std_margin,
        std_penalty=r.std_penalty,
        triplet_balance=r.triplet_balance,
        rank_to_mos=r.rank_to_mos,
        pairwise=r.pairwise,
        triplet_ranking=r.triplet_ranking,
    )
    chunk = r.preference_chunk if r.preference_scope == "micro" else None
    # One actor: the preference branch compares items across the whole batch it is given.
    actor = ray.remote(num_cpus=0)(RewardWorker)
    return actor.remote(cfg.data.task, weights, r.format_weight, r.accuracy_weight, chunk, r.accuracy)


@dataclass
class Roles:
    rollouts: list
    reward: object
    learners: LearnerGroup
    placement: dict | None = None  # the reserved bundles, for the run summary
    weight_transfer: str | None = None  # vLLM's nccl | ipc transfer, set up; None: the Ray object store


def start_roles(cfg) -> Roles:
    """Reserve the placement group (if any), then start rollout actors, the reward actor, the learners."""
    layout = role_plan(cfg)
    group = reserve(layout, cfg.placement.strategy, cfg.placement.timeout_s)
    placement = None
    if group is not None:
        placement = {"mode": cfg.placement.mode, "strategy": cfg.placement.strategy, "bundles": layout.bundles,
                     "rollout_bundles": [s.bundle for s in layout.rollouts],
                     "learner_bundles": [s.bundle for s in layout.learners],
                     "state": ray.util.placement_group_table(group)["state"]}
    roles = Roles(start_rollouts(cfg, layout.rollouts, group), start_reward(cfg),
                  LearnerGroup(cfg, layout.learners, group), placement)
    sync = cfg.rollout.vllm.weight_sync if cfg.rollout.backend == "vllm" else "object_store"
    if sync in ("nccl", "ipc"):
        workers = len(roles.rollouts) * cfg.rollout.vllm.tensor_parallel_size
        roles.learners.connect_rollouts(sync, roles.rollouts, workers)
        roles.weight_transfer = sync
    return roles
