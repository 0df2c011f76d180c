"""preresq's single controller: GRPO with the PRPO reward over Ray actors.

    python launch/grpo.py --config configs/local.yaml trainer.steps=20
    ray job submit --working-dir . -- python launch/grpo.py --config configs/local.yaml

Without a cluster address it starts an embedded single-node Ray; under `ray job submit` it joins
the job's cluster. The loop: batch -> generate -> reward -> advantages -> learn -> sync -> log,
guard, checkpoint, evaluate (with trainer.max_staleness 1 the next batch is generated during learn);
a lost learner rank is relaunched from the newest checkpoint. The
roles live in actors/, the algorithm's pieces are pure functions (actors/grpo_objective.py,
rewards/prpo.py), and the run's set-up and finish are in launch/trainer/.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from actors.calls import RoleError
from actors.grpo_objective import group_advantages, variance_weights
from actors.learner import deal_samples
from launch.trainer.checkpoint import CheckpointError
from launch.trainer.config import typed
from launch.trainer.dynamic_sampling import refilled
from launch.trainer.finish import Outcome, close_run, finish_training, stop_for_preemption
from launch.trainer.health import HealthError
from launch.trainer.metrics import Timer, step_metrics
from launch.trainer.pipeline import collect, sample_now, submit
from launch.trainer.preemption import Preempted
from launch.trainer.relaunch import relaunchable
from launch.trainer.rollback import roll_back
from launch.trainer.setup import read_inputs, ready_for_first_step, start_run
from launch.trainer.training_run import TrainingRun


def grpo_step(run: TrainingRun, step: int) -> dict:
    """One GRPO step: batch -> generate -> reward -> advantages -> learn -> sync; returns its metrics. With
    trainer.max_staleness 1 the batch was generated during the step before, and the next one is generated during
    this step's learning (launch/trainer/pipeline.py)."""
    stage, data, roles, timer = run.stage(step), run.data, run.roles, Timer()
    cfg = stage.cfg  # the run's config with the step's stage's overrides
    if step == stage.first_step and len(run.resolved_stages) > 1:
        print(stage.announce(len(run.resolved_stages)), flush=True)
    with run.redoable():  # until the update starts, a SIGTERM abandons the step; the resumed run redoes it
        batch = run.batch_sampled_ahead(step) or sample_now(run, step, timer)
        pending = submit(run, step + 1, timer) if run.samples_ahead(step) else None  # answered during learning
        requests, mos, answers = batch.requests, batch.mos, batch.answers
        refill = None
        if cfg.algorithm.dynamic_sampling.enabled:  # groups of equal rewards give way to the next items
            with timer.phase("refill"):
                requests, mos, answers, refill = refilled(run, step, requests, mos, answers)
        kept = answered(answers)  # a skipped item is not scored, and trained on with no tokens and advantage 0
        if not kept:
            raise RuntimeError(f"step {step}: the rollout engine skipped every prompt of the batch as too long: "
                               "raise rollout.vllm.max_model_len or lower model.max_pixels")
        kept_answers, kept_mos = [answers[i] for i in kept], [mos[i] for i in kept]
        with timer.phase("reward"):
            rewards = roles.reward.score(kept_answers, kept_mos, [requests[i].task for i in kept], typed(cfg.reward),
                                         [requests[i].dataset for i in kept])
        with timer.phase("advantage"):
            advantages = np.zeros((len(requests), cfg.rollout.group_size))
            advantages[kept] = item_advantages(rewards, cfg.algorithm)
        run.samples.training(step, requests, answers, mos, kept, rewards, advantages)  # every samples_every steps
    with timer.phase("learn"):
        lr = run.learning_rate(step)
        learner_stats = roles.learners.train_step(deal_samples(requests, answers, advantages, cfg.learner.num_ranks),
                                                  lr, cfg.rollout.temperature)
    if pending is not None:
        with timer.phase("wait"):  # the weights change only between generate calls
            run.ahead = collect(run, pending)
    else:
        run.ahead = None
    delivered = {}
    with timer.phase("sync"):
        if any(s["applied"] for s in learner_stats):
            delivered = roles.weights.push(step)  # checked: what arrived is what the learner sent
        else:
            roles.weights.unchanged(step)  # nothing applied: the rollouts hold these weights

    metrics = step_metrics(rewards, kept_answers, kept_mos, advantages[kept], learner_stats)
    metrics.update(timer.seconds)
    metrics.update({"time/step": sum(timer.seconds.values()), "learner/lr": lr, "trainer/stage": float(stage.number),
                    "rollout/skipped_prompts": float(len(requests) - len(kept) - (refill.padded if refill else 0)),
                    "data/skipped_media": float(len(data.skipped)),
                    "faults/rollout_restarts": float(roles.rollouts.restarted)})
    if cfg.trainer.max_staleness:
        metrics["trainer/staleness"] = float(batch.staleness(step - 1))
        if run.ahead is not None:
            metrics["time/generate_ahead"] = run.ahead.generate_s  # submit to collected: overlapped with learning
    metrics.update(refill.metrics() if refill else {})
    metrics.update(delivered)
    return metrics


def answered(answers: list) -> list[int]:
    """Indices of the items the rollout engine answered (vLLM skips a prompt too long for it, by option)."""
    return [i for i, row in enumerate(answers) if not any(c.skipped for c in row)]


def item_advantages(rewards, algorithm) -> np.ndarray:
    """[B, G] group advantages of the scored items, each item's scaled by its variance weight (algorithm.
    variance_weighting; 0: none)."""
    advantages = group_advantages(torch.tensor(rewards.terms["total"]), algorithm.advantage, algorithm.advantage_eps)
    weights = variance_weights(torch.tensor(rewards.predictions), algorithm.variance_weighting)
    return (advantages * weights[:, None]).numpy()


def train(run: TrainingRun) -> Outcome:
    """GRPO steps up to trainer.steps, then the final checkpoint and checks. A health breach (in a step's metrics,
    or a validation's, the last one's too) rolls back to a snapshot and the steps after it are redone; a lost
    learner rank starts the learner group again from the newest checkpoint, and the steps after it are redone; a
    SIGTERM or a Ctrl-C stops it between steps (or abandons a step not yet learning) with Preempted."""
    cfg = run.cfg
    while True:
        with relaunchable(run):
            breach = run.pending_validation()  # a stop came between a step and its validation
            if breach:
                run.step = roll_back(breach, run)
        while run.step < cfg.trainer.steps:
            run.stop.check()
            with relaunchable(run):
                step = run.step + 1
                metrics = grpo_step(run, step)
                run.step = step
                run.log_step(step, metrics)
                breach = run.guard.check(step, metrics)
                if not breach and run.validation_due(step):
                    breach = run.judged_validation(step)
                if breach:
                    run.step = roll_back(breach, run)
                    continue
                if run.snapshot_due(step):
                    run.save(run.snapshots, step)
                if run.checkpoint_due(step):
                    run.save(run.checkpoints, step)
        with relaunchable(run):
            return finish_training(run)


def main(argv: list[str] | None = None) -> dict:
    cfg, data = read_inputs(argv, __doc__)
    run = start_run(cfg, data)
    try:
        ready_for_first_step(run)
        outcome = train(run)
    except Preempted:
        outcome = stop_for_preemption(run)
    except BaseException as error:
        run.record.failure = str(error) or type(error).__name__
        close_run(run, None)
        raise
    summary = close_run(run, outcome)
    if outcome.status == "KILLED":
        raise Preempted(run.stop.signal, outcome.problem)
    if outcome.problem:
        raise HealthError(outcome.problem)
    return summary


def cli(argv: list[str] | None = None) -> None:
    """main() as a command: a named error is one line and a non-zero exit; a SIGTERM exits 143, a Ctrl-C 130."""
    try:
        main(argv)
    except (HealthError, RoleError, CheckpointError) as error:
        raise SystemExit(f"preresq: {error}") from None
    except Preempted as stopped:
        print(f"preresq: {stopped}", file=sys.stderr, flush=True)
        raise SystemExit(stopped.exit_code) from None


if __name__ == "__main__":
    cli()
