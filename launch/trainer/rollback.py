"""The health guard's remedy: the learner and rollout actors back to a snapshot from before a breach."""

from __future__ import annotations

import math

from launch.trainer import checkpoint
from launch.trainer.checkpoint import CheckpointStore
from launch.trainer.health import Breach, HealthError, HealthGuard


def roll_back(breach: Breach, roles, cfg, snapshots: CheckpointStore, guard: HealthGuard, sampler,
              history: dict, tracker) -> int:
    """Learner and rollout actors back to the newest snapshot before the breached window; returns its step.

    Raises HealthError when the rollbacks are used up or no snapshot exists."""
    events = history["rollbacks"]
    target = snapshots.before(breach.step - breach.window - 1)
    where = f"the last healthy snapshot is {snapshots.folder(target)}" if target is not None else "no snapshot"
    if len(events) >= cfg.health.max_rollbacks or target is None:
        raise HealthError(
            f"training broke at step {breach.step}: {breach.message}, after {len(events)} rollbacks "
            f"(health.max_rollbacks = {cfg.health.max_rollbacks}); {where}. Lower learner.lr, raise "
            f"algorithm.kl_coef, or loosen health.{breach.signal}; a rerun with run.resume continues from the newest "
            f"checkpoint in {cfg.run.output_dir}."
        )
    checkpoint.verify(snapshots.folder(target))
    roles.learners.load_checkpoint(str(snapshots.folder(target) / "deepspeed"), tag="state")
    state = snapshots.state(target)
    sampler.load_state(state["sampler"])
    history["steps"] = [s for s in history["steps"] if s["step"] <= target]
    history["eval"] = {k: v for k, v in history["eval"].items() if int(k) <= target}
    guard.forget_after(target)
    snapshots.drop_after(target)
    roles.sync_weights(target)
    scale = cfg.health.lr_factor ** (len(events) + 1)
    events.append({"step": breach.step, "signal": breach.signal, "value": breach.value, "message": breach.message,
                   "to_step": target, "lr_scale": scale})
    tracker.log_metrics({"health/rollbacks": float(len(events)), "health/lr_scale": scale,
                         f"health/breach/{breach.signal}": breach.value if math.isfinite(breach.value) else -1.0},
                        breach.step)
    print(f"health: {breach.message} (step {breach.step}). Rolled back to step {target} "
          f"({snapshots.folder(target)}), learning rate x{scale:g}, sampling seed moved on "
          f"[rollback {len(events)} of {cfg.health.max_rollbacks}]", flush=True)
    return target
