"""A lost learner rank survived: the learner group started again from the newest checkpoint.

A rank's death (its process, or its whole node) takes the group's ZeRO shards and collective with it. The controller
ends the surviving ranks, waits until the lost bundles are placed again (a replacement node joins, within
placement.timeout_s), starts a new group in the same slots, loads the newest checkpoint into it and gives the rollout
actors its weights; the steps after that checkpoint are redone (MLflow logs each step once). At most
run.max_relaunches times in a run; then the run fails and says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from actors.groups import LearnerLost
from launch.trainer import checkpoint
from launch.trainer.roles import relaunch_learners, role_nodes
from launch.trainer.run_record import Relaunch
from launch.trainer.training_run import TrainingRun


@contextmanager
def relaunchable(run: TrainingRun) -> Iterator[None]:
    """Work during which a lost learner rank is answered by a relaunch (the work is then left: the loop goes on
    from the checkpoint's step)."""
    try:
        yield
    except LearnerLost as lost:
        relaunch(run, lost)


def relaunch(run: TrainingRun, lost: LearnerLost) -> None:
    """The learner group started again from the newest checkpoint; LearnerLost again when run.max_relaunches are
    used up."""
    cfg, record, began = run.cfg, run.record, time.monotonic()
    done = run.step
    if len(record.relaunches) >= cfg.run.max_relaunches:
        raise LearnerLost(f"{lost}; run.max_relaunches = {cfg.run.max_relaunches} relaunches of the learner group "
                          "are used up. Rerun the same command: it resumes from the newest checkpoint") from None
    folder = run.checkpoints.latest()
    state = checkpoint.read_state(folder) if folder is not None else None
    target = state["step"] if state is not None else 0
    print(f"learner group lost after step {done} ({lost}); starting it again from "
          f"{folder or cfg.model.path} (step {target}) once its slots are placed, within placement.timeout_s = "
          f"{cfg.placement.timeout_s:g} s [relaunch {len(record.relaunches) + 1} of {cfg.run.max_relaunches}]",
          flush=True)
    run.step = target  # a SIGTERM while the group starts: the checkpoint holds every step the run keeps
    with run.stop.abandonable():
        relaunch_learners(run.roles, cfg)
    run.roles.learners.see(run.output_dir.resolve())
    run.restore(folder, state)
    run.snapshots.drop_after(target)  # from the steps that will be redone
    run.tracker.replay_until(done)
    seconds = time.monotonic() - began
    run.record.relaunches.append(Relaunch(done, str(lost), target, round(seconds, 3)))
    run.tracker.log_metrics({"faults/learner_relaunches": float(len(run.record.relaunches)),
                             "time/relaunch": seconds}, done + 1)
    nodes = role_nodes(run.roles)["learners"]
    print(f"learner group relaunched in {seconds:.1f} s on nodes {[n[:12] for n in nodes]}; redoing steps "
          f"{target + 1}-{done}", flush=True)
