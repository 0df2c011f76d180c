"""Where the roles run: one Ray placement group holding the rollout and learner bundles.

- `separate`: a bundle per rollout actor and a bundle per learner rank; on GPUs each gets whole GPUs
  of its own (rollout engines and the ZeRO group never share memory).
- `colocated`: one bundle per slot holding a rollout actor and a learner rank side by side, which
  share the slot's GPU (fractions); the roles take turns (generate, then learn).
- `none`: no placement group, Ray places actors wherever resources are free.
The placement group is reserved before any actor starts, so a cluster that is too small fails at
once with the bundles named, instead of a job that hangs half-started.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

PLACEMENT_MODES = ("none", "separate", "colocated")
# Ray's placement-group strategies: PACK fills nodes in turn, SPREAD balances, STRICT_* insist.
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class Slot:
    """How one actor is placed: its resource request, and its bundle (None: no placement group)."""

    num_cpus: float
    num_gpus: float
    bundle: int | None = None


@dataclass
class Plan:
    bundles: list[dict[str, float]] = field(default_factory=list)
    rollouts: list[Slot] = field(default_factory=list)
    learners: list[Slot] = field(default_factory=list)


def plan(mode: str, rollouts: int, learners: int, rollout_gpu: bool, learner_cpus: float, learner_gpus: float,
         colocated_rollout_share: float) -> Plan:
    """Bundles and slots for `rollouts` rollout actors and `learners` learner ranks. Pure: no Ray calls.

    Rollout actors take 1 CPU and (on GPU) 1 GPU; learner ranks `learner_cpus` and `learner_gpus`.
    Colocated: slot i holds rollout i and rank i on one GPU, the rollout taking `colocated_rollout_share`.
    """
    rollout_gpus = 1.0 if rollout_gpu else 0.0
    if mode == "none":
        return Plan([], [Slot(1, rollout_gpus) for _ in range(rollouts)],
                    [Slot(learner_cpus, learner_gpus) for _ in range(learners)])
    if mode == "separate":
        bundles = [_bundle(1, rollout_gpus) for _ in range(rollouts)]
        bundles += [_bundle(learner_cpus, learner_gpus) for _ in range(learners)]
        return Plan(bundles, [Slot(1, rollout_gpus, i) for i in range(rollouts)],
                    [Slot(learner_cpus, learner_gpus, rollouts + j) for j in range(learners)])
    if mode == "colocated":
        slots = max(rollouts, learners)
        gpu = 1.0 if (rollout_gpu or learner_gpus) else 0.0
        share = colocated_rollout_share * gpu
        bundles = [_bundle((1 if i < rollouts else 0) + (learner_cpus if i < learners else 0), gpu)
                   for i in range(slots)]
        return Plan(bundles, [Slot(1, share, i) for i in range(rollouts)],
                    [Slot(learner_cpus, gpu - share, j) for j in range(learners)])
    raise ValueError(f"placement mode {mode!r}: expected one of {PLACEMENT_MODES}")


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}


def reserve(p: Plan, strategy: str, timeout_s: float):
    """Create the placement group and wait for it; None when the plan has no bundles."""
    if not p.bundles:
        return None
    group = placement_group(p.bundles, strategy=strategy, name="preresq-roles")
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        available = ray.available_resources()
        ray.util.remove_placement_group(group)
        raise RuntimeError(
            f"placement group of {len(p.bundles)} bundles {p.bundles} (strategy {strategy}) could not be "
            f"reserved in {timeout_s:.0f}s; the cluster has {available}. Lower rollout.num_actors / "
            "learner.num_ranks or add nodes."
        )
    return group


def actor_options(slot: Slot, group) -> dict:
    """Keyword arguments for `ActorClass.options(...)`."""
    options = {"num_cpus": slot.num_cpus, "num_gpus": slot.num_gpus}
    if group is not None and slot.bundle is not None:
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=slot.bundle
        )
    return options
