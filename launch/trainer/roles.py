"""The run's roles wired from its config: placement reserved, then the rollout actors, the reward actor, the
learner group and the weight sync between them."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import ray

from actors.calls import bounded_get
from actors.groups import LearnerGroup, LearnerLost, RewardGroup, RolloutGroup, start_rollouts
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
    weights: WeightSync | None = None  # set by connect()
    placement: dict | None = None  # the reserved bundles, for the run summary
    layout: Plan | None = None  # the slots the actors were started in (a relaunch reuses them)
    group: object = None  # the placement group (None: placement.mode none)


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
        nodes = []
        for ref in refs:
            try:
                nodes.append(bounded_get(ref, roles.rollouts.timeout_s, "roles' nodes", "rollout.generate_timeout_s"))
            except ray.exceptions.RayActorError:  # gone since its last call (its node died)
                nodes.append("lost")
        return nodes

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
    roles = Roles(rollouts, reward, start_learners(cfg, layout, group), placement=placement, layout=layout,
                  group=group)
    connect(roles, cfg)
    return roles


def start_learners(cfg, layout: Plan, group, placement_timeout_s: float | None = None) -> LearnerGroup:
    return LearnerGroup(LearnerSettings.from_config(cfg), cfg.learner.step_timeout_s,
                        cfg.learner.checkpoint_timeout_s, layout.learners, group, placement_timeout_s)


def weight_transport(cfg) -> str | None:
    """vLLM's own weight transfer (nccl | ipc), or None: rank 0's weights as one Ray object."""
    sync = cfg.rollout.vllm.weight_sync if cfg.rollout.backend == "vllm" else "object_store"
    return sync if sync in ("nccl", "ipc") else None


def connect(roles: Roles, cfg) -> None:
    """The weight sync from the learner group to the rollout actors (vLLM's transfer joined first, if used)."""
    transport, rollouts = weight_transport(cfg), roles.rollouts
    if transport:
        v = cfg.rollout.vllm
        # Every engine loaded first: the rendezvous then waits only for the engines to join, not to load.
        rollouts.on_each("__ray_ready__", timeout_s=cfg.rollout.generate_timeout_s,
                         option="rollout.generate_timeout_s")
        roles.learners.connect_rollouts(TransferSettings(transport, v.tensor_parallel_size, v.rendezvous_timeout_s,
                                                         cfg.rollout.sync_timeout_s, v.transfer_buffer_bytes),
                                        rollouts.actors)
    roles.weights = weights = WeightSync(roles.learners, rollouts, cfg.rollout.sync_timeout_s, transport)
    # A rollout actor that Ray restarted holds the model folder's weights: it gets the learner's first.
    rollouts.resync = lambda actors: weights.push(rollouts.version, actors)


def relaunch_learners(roles: Roles, cfg) -> None:
    """A new learner group in the old one's slots, once they are placed again (within placement.timeout_s: a lost
    node's bundles wait for a node to take them). vLLM's nccl/ipc transfer cannot take a new group in, so its
    rollout engines start again too. The caller loads a checkpoint into the new group and pushes its weights."""
    roles.learners.end()
    if weight_transport(cfg):
        restarted = roles.rollouts.restarted
        roles.rollouts.end()
        roles.rollouts = start_rollouts(typed(cfg.model), typed(cfg.rollout), cfg.run.seed, roles.layout.rollouts,
                                        roles.group)
        roles.rollouts.restarted = restarted
    deadline = time.monotonic() + cfg.placement.timeout_s
    while True:
        try:
            roles.learners = start_learners(cfg, roles.layout, roles.group, max(1.0, deadline - time.monotonic()))
            break
        except LearnerLost as error:  # a rank placed on a node that Ray had not yet found dead: its slot moves on
            if time.monotonic() > deadline:
                raise
            print(f"the new learner group lost a rank while starting ({error}); starting it again", flush=True)
    connect(roles, cfg)


def verify_sync(roles: Roles, cfg, requests: list) -> dict:
    """The rollout actors hold the learner's weights, or a RuntimeError: equal weight hashes with transformers
    rollouts; with vLLM (fused weights), its greedy answers to `requests` (the readable validation items) equal
    those of a transformers copy given the learner's weights."""
    if cfg.rollout.backend == "hf":
        return roles.weights.verify_digests()
    transformers_cpu = replace(typed(cfg.rollout), backend="hf", device="cpu")
    copy = ray.remote(num_cpus=0)(RolloutWorker).remote(typed(cfg.model), transformers_cpu, cfg.run.seed)
    one_greedy = replace(typed(cfg.eval), readout="greedy", samples=1)
    greedy = SamplingSettings.evaluation(one_greedy, cfg.rollout, cfg.run.seed)
    return roles.weights.verify_answers(requests, copy, greedy)
