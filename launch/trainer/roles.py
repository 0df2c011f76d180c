"""The run's roles wired from its config: placement reserved, then the rollout actors, the reward actor, the
learner group and the weight sync between them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import ray

from actors.calls import bounded_get
from actors.groups import LearnerGroup, RewardGroup, RolloutGroup, start_rollouts
from actors.learner import LearnerSettings
from actors.placement import Plan, plan, reserve
from actors.rollout import RolloutWorker
from actors.weight_sync import WeightSync
from actors.weight_transfer import TransferSettings
from launch.trainer.config import typed
from rollouts.backend import SamplingSettings


@dataclass
class Roles:
    rollouts: RolloutGroup
    reward: RewardGroup
    learners: LearnerGroup
    weights: WeightSync
    placement: dict | None = None  # the reserved bundles, for the run summary


def role_plan(cfg) -> Plan:
    """The bundles of the config's layout: GPUs for the roles on GPU, or for every role with
    placement.declared_gpus (a GPU layout rehearsed on nodes that declare GPUs while the roles compute on CPU)."""
    declared = cfg.placement.declared_gpus
    learner_gpus = cfg.learner.gpus_per_rank if cfg.learner.device != "cpu" or declared else 0.0
    return plan(cfg.placement.mode, cfg.rollout.num_actors, cfg.learner.num_ranks,
                cfg.rollout.device != "cpu" or declared, cfg.learner.cpus_per_rank, learner_gpus,
                cfg.placement.colocated_rollout_share)


def role_nodes(roles: Roles) -> dict:
    """The Ray node of every role's actor, for the run summary (bounded by rollout.generate_timeout_s)."""

    def node_of(actors: list) -> list[str]:
        refs = [a.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()) for a in actors]
        return bounded_get(refs, roles.rollouts.timeout_s, "roles' nodes", "rollout.generate_timeout_s")

    return {"rollouts": node_of(roles.rollouts.actors), "reward": node_of([roles.reward.actor])[0],
            "learners": node_of(roles.learners.ranks)}


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
    rollouts = start_rollouts(typed(cfg.model), typed(cfg.rollout), cfg.run.seed, layout.rollouts, group)
    reward = RewardGroup(typed(cfg.reward))
    learners = LearnerGroup(LearnerSettings.from_config(cfg), cfg.learner.step_timeout_s,
                            cfg.learner.checkpoint_timeout_s, layout.learners, group)
    sync = cfg.rollout.vllm.weight_sync if cfg.rollout.backend == "vllm" else "object_store"
    transport = sync if sync in ("nccl", "ipc") else None
    if transport:
        v = cfg.rollout.vllm
        # Every engine loaded first: the rendezvous then waits only for the engines to join, not to load.
        rollouts.on_each("__ray_ready__", timeout_s=cfg.rollout.generate_timeout_s,
                         option="rollout.generate_timeout_s")
        learners.connect_rollouts(TransferSettings(transport, v.tensor_parallel_size, v.rendezvous_timeout_s,
                                                   cfg.rollout.sync_timeout_s, v.transfer_buffer_bytes),
                                  rollouts.actors)
    weights = WeightSync(learners, rollouts, cfg.rollout.sync_timeout_s, transport)
    # A rollout actor that Ray restarted holds the model folder's weights: it gets the learner's first.
    rollouts.resync = lambda actors: weights.push(rollouts.version, actors)
    return Roles(rollouts, reward, learners, weights, placement)


def verify_sync(roles: Roles, cfg, requests: list) -> dict:
    """The rollout actors hold the learner's weights, or a RuntimeError: equal weight hashes with transformers
    rollouts; with vLLM (fused weights), its greedy answers to `requests` (the readable validation items) equal
    those of a transformers copy given the learner's weights."""
    if cfg.rollout.backend == "hf":
        return roles.weights.verify_digests()
    transformers_cpu = replace(typed(cfg.rollout), backend="hf", device="cpu")
    copy = ray.remote(num_cpus=0)(RolloutWorker).remote(typed(cfg.model), transformers_cpu, cfg.run.seed)
    greedy = SamplingSettings.evaluation(replace(typed(cfg.eval), greedy=True), cfg.rollout, cfg.run.seed)
    return roles.weights.verify_answers(requests, copy, greedy)
