"""Everything after the last step: the final validation, checkpoint and policy, the sync check, the run's
status; then the curves, MLflow's status and `summary.json`, written in one place."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from launch.trainer.metrics import summarise
from launch.trainer.plots import training_curves
from launch.trainer.roles import role_nodes, verify_sync
from launch.trainer.training_run import TrainingRun


@dataclass(frozen=True)
class Outcome:
    status: str  # FINISHED | FAILED | KILLED
    weight_digests: dict | None  # what trainer.verify_sync found
    problem: str | None = None  # why a run that got to the end FAILED, or where a KILLED one stopped


def finish_training(run: TrainingRun) -> Outcome:
    """After the last step and its validation: the checkpoint, the Hugging Face policy, the sync check; FAILED
    when the final policy scores too few held-out items (health.min_scored)."""
    cfg, steps = run.cfg, run.cfg.trainer.steps
    run.save(run.checkpoints, steps)
    run.roles.learners.save_pretrained(str(run.policy_dir))
    digests = verify_sync(run.roles, cfg, run.data.readable_eval()) if cfg.trainer.verify_sync else None
    final = run.record.evals[steps]
    readable = final["items"] - final["unreadable"]
    scored_share = final["scored"] / max(readable, 1)
    if scored_share >= cfg.health.min_scored or not cfg.health.enabled:
        return Outcome("FINISHED", digests)
    return Outcome("FAILED", digests, (
        f"the final policy scored {int(final['scored'])} of {int(readable)} readable held-out items "
        f"({scored_share:.0%}), below health.min_scored = {cfg.health.min_scored:.0%}: its answers lost the format. "
        f"The policy is in {run.policy_dir}, but do not use it; see {run.output_dir / 'curves.png'}."))


def stop_for_preemption(run: TrainingRun) -> Outcome:
    """After a SIGTERM or a Ctrl-C: the steps done so far checkpointed (unless they are already), the time it took
    said."""
    cfg, step = run.cfg, run.step
    if step > 0 and step not in run.checkpoints.steps():
        run.save(run.checkpoints, step)
    took = run.stop.seconds_since()
    late = (f"; that is over run.stop_grace_s = {cfg.run.stop_grace_s:g} s: raise it, RAY_JOB_STOP_WAIT_TIME_S and "
            "the pods' terminationGracePeriodSeconds, or a SIGKILL may come first" if took > cfg.run.stop_grace_s
            else "")
    where = (f"{run.checkpoints.folder(step)} holds steps 1-{step}, written {took:.0f} s after the signal{late}"
             if step > 0 else "nothing was learned yet")
    return Outcome("KILLED", None, f"stopped by {run.stop.signal} after step {step} of {cfg.trainer.steps}: {where}. "
                                   "Rerun the same command to resume.")


def close_run(run: TrainingRun, outcome: Outcome | None) -> dict:
    """The curves plot and MLflow's final status; `summary.json` (atomically): the whole summary when the run got
    to its end (`outcome` FINISHED or FAILED), else its failure or why it stopped, and its rollbacks."""
    status = outcome.status if outcome else "FAILED"
    if run.progress is not None:
        run.progress.close()
    try:
        if run.record.curves:
            curves = training_curves(run.record.curves, run.record.evals, run.output_dir / "curves.png",
                                     run.cfg.run.name)
            run.tracker.log_artifact(str(curves))
    finally:
        run.tracker.finish(status)
    rollbacks = [asdict(r) for r in run.record.rollbacks]
    relaunches = [asdict(r) for r in run.record.relaunches]
    if outcome is None or outcome.status == "KILLED":
        summary = {"status": status, "failure": outcome.problem if outcome else run.record.failure,
                   "step": run.step, "rollbacks": rollbacks, "relaunches": relaunches}
    else:
        summary = summarise(run.cfg, run.record, run.start_step, time.time() - run.started, run.data, run.policy_dir)
        summary.update(status=status, weight_digests=outcome.weight_digests, mlflow_run_id=run.tracker.run_id,
                       placement=run.roles.placement, nodes=role_nodes(run.roles),
                       learner_ranks=run.roles.learners.ranks_info,
                       rollout_restarts=run.roles.rollouts.restarted, relaunches=relaunches,
                       replay_mismatch=run.tracker.replay_mismatch)
    write_json(run.output_dir / "summary.json", summary)
    return summary


def write_json(path: Path, value: dict) -> None:
    """Whole or not at all: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(value, indent=2))
    os.replace(partial, path)
