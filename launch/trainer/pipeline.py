"""Batches sampled ahead of the learner (trainer.max_staleness 1): while the learner trains on step s's batch, the
rollout actors answer step s+1's with the weights they hold. The weights are synced only once those answers are in,
so a sync never lands under a generate call; a batch is learned from one weight version after the one that
sampled it. With max_staleness 0 every batch is sampled in its own step, as the synchronous loop does.

What a checkpoint keeps of a batch sampled ahead (`AheadBatch.state`): its answers, the weight version that sampled
them and the sampler's position before its items were drawn, so that a resumed run draws the same items again and
learns the very answers the interrupted one would have.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from rollouts.backend import Completion


@dataclass
class SampledBatch:
    """One step's items and their G answers each. version: the weight version (steps learned) that answered them;
    position: the sampler's state before they were drawn; generate_s: seconds from the submit to the last answer
    collected (for a batch sampled ahead, the rollouts' wall time, overlapped with learning)."""

    step: int
    version: int
    requests: list
    mos: list[float]
    answers: list[list[Completion]]
    position: dict
    generate_s: float

    def staleness(self, learner_version: int) -> int:
        """Weight versions between the one that sampled this batch and the learner's that trains on it."""
        return learner_version - self.version

    def state(self) -> dict:
        """What a checkpoint keeps (JSON): the requests are drawn again from `position`."""
        return {"step": self.step, "version": self.version, "position": self.position, "mos": self.mos,
                "answers": [[asdict(c) for c in row] for row in self.answers], "generate_s": self.generate_s}


@dataclass
class PendingBatch:
    """A batch submitted to the rollout actors and not yet collected."""

    step: int
    version: int
    requests: list
    mos: list[float]
    position: dict
    handles: list
    started: float


def sample_now(run, step: int, timer) -> SampledBatch:
    """Step `step`'s batch drawn and answered by the weights the rollout actors hold (timed as batch, generate)."""
    with timer.phase("batch"):
        position = run.sampler.state()
        requests, mos = run.draw(step, run.cfg.trainer.batch_size)
    with timer.phase("generate"):
        started = time.monotonic()
        answers = run.roles.rollouts.generate(requests, run.sampling(step))
    return SampledBatch(step, run.roles.rollouts.version, requests, mos, answers, position,
                        time.monotonic() - started)


def submit(run, step: int, timer) -> PendingBatch:
    """Step `step`'s batch drawn and handed to the rollout actors (timed as submit); returns at once."""
    with timer.phase("submit"):
        position = run.sampler.state()
        requests, mos = run.draw(step, run.cfg.trainer.batch_size)
        rollouts = run.roles.rollouts
        share = -(-len(requests) // len(rollouts))
        started = time.monotonic()
        handles = [rollouts.submit(i, requests[i * share: (i + 1) * share], run.sampling(step))
                   for i in range(len(rollouts))]
    return PendingBatch(step, rollouts.version, requests, mos, position, handles, started)


def collect(run, pending: PendingBatch) -> SampledBatch:
    """The answers of a submitted batch (bounded, a dead rollout actor restarted and its share redone, as for any
    generate call)."""
    answers = [row for handle in pending.handles for row in run.roles.rollouts.result(handle)]
    return SampledBatch(pending.step, pending.version, pending.requests, pending.mos, answers, pending.position,
                        time.monotonic() - pending.started)


def restored(run, state: dict | None) -> SampledBatch | None:
    """The batch a checkpoint's trainer state kept (None: none was sampled ahead), its requests drawn again; leaves
    the sampler where the checkpoint left it."""
    if not state:
        return None
    after = run.sampler.state()
    run.sampler.load_state(state["position"])
    requests, mos = run.draw(state["step"], run.cfg.trainer.batch_size)
    run.sampler.load_state(after)
    if mos != state["mos"]:
        raise RuntimeError(f"the batch of step {state['step']} kept in the checkpoint does not match the items drawn "
                           "again from its sampler position (the data set changed since?): resume with the data it "
                           "was written with, or start a new run.output_dir")
    answers = [[Completion(**c) for c in row] for row in state["answers"]]
    return SampledBatch(state["step"], state["version"], requests, mos, answers, state["position"],
                        state["generate_s"])
