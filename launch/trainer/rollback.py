"""The health guard's remedy: the learner and rollout actors back to a snapshot from before a breach."""

from __future__ import annotations

import math

from launch.trainer import checkpoint
from launch.trainer.health import Breach, HealthError
from launch.trainer.run_record import Rollback
from launch.trainer.training_run import TrainingRun


def roll_back(breach: Breach, run: TrainingRun) -> int:
    """Learner and rollout actors back to the newest snapshot before the breached window; returns its step.

    Raises HealthError when the rollbacks are used up or no snapshot exists."""
    cfg, snapshots, record = run.cfg, run.snapshots, run.record
    target = snapshots.before(breach.step - breach.window - 1)
    where = f"the last healthy snapshot is {snapshots.folder(target)}" if target is not None else "no snapshot"
    if len(record.rollbacks) >= cfg.health.max_rollbacks or target is None:
        raise HealthError(
            f"training broke at step {breach.step}: {breach.message}, after {len(record.rollbacks)} rollbacks "
            f"(health.max_rollbacks = {cfg.health.max_rollbacks}); {where}. Lower learner.lr, raise "
            f"algorithm.kl_coef, or loosen health.{breach.signal}; a rerun with run.resume continues from the newest "
            f"checkpoint in {cfg.run.output_dir}."
        )
    checkpoint.verify(snapshots.folder(target))
    run.roles.learners.load_checkpoint(str(snapshots.folder(target) / "deepspeed"), tag="state")
    state = snapshots.state(target)
    # A batch the snapshot sampled ahead is dropped (the rollback moves the sampling seed on), its items not:
    # the sampler goes back to before them, so the redone step draws them again.
    run.sampler.load_state(state["ahead"]["position"] if state.get("ahead") else state["sampler"])
    run.ahead = None
    record.forget_after(target)
    run.guard.forget_after(target)
    snapshots.drop_after(target)
    run.roles.weights.push(target)
    scale = record.lr_scale() * cfg.health.lr_factor
    record.rollbacks.append(Rollback(breach.step, breach.signal, breach.value, breach.message, target, scale))
    # Durable: `latest` now names this state with the rollback in it (the checkpoints of the abandoned steps go),
    # so a crash while the steps are redone resumes here, with the rollback, its lr cut and its sampling seeds.
    run.save(run.checkpoints, target)
    run.tracker.log_metrics({"health/rollbacks": float(len(record.rollbacks)), "health/lr_scale": scale,
                             f"health/breach/{breach.signal}": breach.value if math.isfinite(breach.value) else -1.0},
                            breach.step)
    print(f"health: {breach.message} (step {breach.step}). Rolled back to step {target} "
          f"({snapshots.folder(target)}), learning rate x{scale:g}, sampling seed moved on "
          f"[rollback {len(record.rollbacks)} of {cfg.health.max_rollbacks}]", flush=True)
    return target
