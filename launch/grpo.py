"""preresq's single controller: GRPO with the PRPO reward over Ray actors.

    python launch/grpo.py --config configs/local.yaml trainer.steps=20
    ray job submit --working-dir . -- python launch/grpo.py --config configs/local.yaml

Without a cluster address it starts an embedded single-node Ray; under `ray job submit` it joins
the job's cluster. The loop: batch -> generate -> reward -> advantages -> learn -> sync -> log,
checkpoint, evaluate. The roles live in actors/, the algorithm's pieces are pure functions
(actors/grpo.py, rewards/prpo.py), and the run's plumbing is in launch/trainer/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LAUNCHED = time.perf_counter()  # before the heavy imports: start-up is measured from here
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from actors.groups import RoleError, connect_ray, start_roles  # noqa: E402
from actors.grpo import group_advantages  # noqa: E402
from actors.learner import deal_samples  # noqa: E402
from actors.lr_schedule import learning_rate  # noqa: E402
from evaluation.validation import evaluate  # noqa: E402
from launch.trainer.checkpoint import CheckpointError, CheckpointStore  # noqa: E402
from launch.trainer.config import ConfigError, flatten, load_config  # noqa: E402
from launch.trainer.health import HealthError, HealthGuard  # noqa: E402
from launch.trainer.metrics import CURVES, Timer, progress_line, step_metrics, summarise  # noqa: E402
from launch.trainer.plots import training_curves  # noqa: E402
from launch.trainer.rollback import roll_back  # noqa: E402
from launch.trainer.run_state import resume_state, sampling_seed, trainer_state  # noqa: E402
from launch.trainer.tracking import Tracker  # noqa: E402
from qadata.manifest import ManifestError  # noqa: E402
from qadata.requests import RunData  # noqa: E402
from qadata.sampler import BatchSampler  # noqa: E402
from rollouts.backend import SamplingSettings  # noqa: E402
from rollouts.processor import require_model_folder  # noqa: E402


def check_inputs(cfg) -> None:
    """Fail before any actor starts when a path the run needs is missing."""
    require_model_folder(cfg.model.path)
    for path in (cfg.data.train_manifest, cfg.data.eval_manifest):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"manifest not found: {path}")


def init_ray(cfg) -> None:
    needed = cfg.rollout.num_actors + cfg.learner.num_ranks * cfg.learner.cpus_per_rank
    connect_ray(cfg.ray.address, cfg.ray.num_cpus or max(os.cpu_count() or 1, math.ceil(needed)))


def report_startup(seconds: dict, tracker: Tracker, step: int) -> None:
    """Seconds from launch to the first step, and its parts; printed and logged (startup/*)."""
    total = time.perf_counter() - LAUNCHED
    seconds = {"time/startup/imports_config_data": total - sum(seconds.values()), **seconds,
               "time/startup/total": total}
    tracker.log_metrics(seconds, step)
    parts = ", ".join(f"{k.rsplit('/', 1)[-1].replace('_', ' ')} {v:.1f}" for k, v in seconds.items()
                      if not k.endswith("total"))
    print(f"ready for step {step + 1} in {total:.1f} s ({parts})", flush=True)


def answered(answers: list) -> list[int]:
    """Indices of the items the rollout engine answered (vLLM skips a prompt too long for it, by option)."""
    return [i for i, row in enumerate(answers) if not any(c.skipped for c in row)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML overriding configs/base.yaml")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.steps=20")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        check_inputs(cfg)
        data = RunData(cfg)
    except (ConfigError, FileNotFoundError, ManifestError) as error:
        raise SystemExit(f"preresq: {error}") from None
    torch.manual_seed(cfg.run.seed)
    output_dir = Path(cfg.run.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = CheckpointStore(output_dir / "checkpoints", cfg.trainer.keep_checkpoints)
    snapshots = CheckpointStore(output_dir / "healthy", cfg.health.keep_snapshots, "healthy snapshot")
    resume_from, state = resume_state(cfg, checkpoints)

    startup = Timer()
    with ThreadPoolExecutor(1) as pool:
        # MLflow's set-up (a new store's schema migrations: seconds) overlaps Ray's start and the actors' loading.
        tracker_ready = pool.submit(
            Tracker, cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment, cfg.run.name, flatten(cfg),
            run_id=state["mlflow_run_id"] if state else None, unsent_path=output_dir / "mlflow-unsent.jsonl")
        with startup.phase("startup/ray"):
            init_ray(cfg)
        with startup.phase("startup/roles"):
            roles = start_roles(cfg)
        with startup.phase("startup/tracking_wait"):
            tracker = tracker_ready.result()
    if roles.placement:
        print(f"placement group ({roles.placement['mode']}, {roles.placement['strategy']}): bundles "
              f"{roles.placement['bundles']}, rollouts in {roles.placement['rollout_bundles']}, learner ranks in "
              f"{roles.placement['learner_bundles']}", flush=True)
    sampler = BatchSampler(len(data.train), cfg.trainer.batch_size, cfg.run.seed)
    history = {"steps": [], "eval": {}, "rollbacks": []}
    guard = HealthGuard(cfg.health, state.get("health_window") if state else None)
    start_step = 0
    if state:
        roles.learners.load_checkpoint(str(resume_from / "deepspeed"), tag="state")
        sampler.load_state(state["sampler"])
        torch.set_rng_state(torch.tensor(state["rng"]["torch"], dtype=torch.uint8))
        history, start_step = {"rollbacks": [], **state["history"]}, state["step"]
        data.skipped.update(state.get("skipped_media", {}))
        roles.sync_weights(start_step)
        print(f"resumed from {resume_from} at step {start_step}"
              + (f"; steps {start_step + 1}-{tracker.logged_until} were logged before the crash and are replayed "
                 "without logging them again" if tracker.logged_until > start_step else ""), flush=True)

    eval_sampling = SamplingSettings.evaluation(cfg.eval, cfg.rollout, cfg.run.seed)

    def validate(step: int) -> dict:
        result = evaluate(roles.rollouts, data.eval, data.load, data.task_of, eval_sampling, cfg.eval.batch_size)
        history["eval"][str(step)] = result
        tracker.log_metrics({f"val/{k}": v for k, v in result.items() if v is not None}, step)
        print(f"step {step} validation: SRCC {result['srcc']} PLCC {result['plcc']} ({int(result['scored'])} of "
              f"{int(result['items'])} items scored, {int(result['parse_failures'])} answers unparsed, "
              f"{int(result['unreadable'])} unreadable)", flush=True)
        return result

    def lr_of(step: int) -> float:
        l = cfg.learner
        return learning_rate(step, l.lr, cfg.trainer.steps, l.lr_schedule, l.warmup_steps, l.min_lr_ratio,
                             cfg.health.lr_factor ** len(history["rollbacks"]))

    def save(store: CheckpointStore, step: int) -> None:
        store.save(step, lambda folder: roles.learners.save_checkpoint(folder, tag="state"),
                   trainer_state(cfg, step, sampler, tracker, history, guard, data))

    def grpo_step(step: int) -> dict:
        """One GRPO step: batch -> generate -> reward -> advantages -> learn -> sync; returns its metrics."""
        timer = Timer()
        with timer.phase("batch"):
            requests, mos = data.batch(sampler, cfg.trainer.batch_size)
        with timer.phase("generate"):
            seed = sampling_seed(cfg.run.seed, step, len(history["rollbacks"]))
            answers = roles.rollouts.generate(requests, SamplingSettings.training(cfg.rollout, seed))
        kept = answered(answers)  # a skipped item is not scored, and trained on with no tokens and advantage 0
        if not kept:
            raise RuntimeError(f"step {step}: the rollout engine skipped every prompt of the batch as too long: "
                               "raise rollout.vllm.max_model_len or lower model.max_pixels")
        kept_answers, kept_mos = [answers[i] for i in kept], [mos[i] for i in kept]
        with timer.phase("reward"):
            rewards = roles.reward.score(kept_answers, kept_mos, [requests[i].task for i in kept])
        with timer.phase("advantage"):
            advantages = np.zeros((len(requests), cfg.rollout.group_size))
            advantages[kept] = group_advantages(
                torch.as_tensor(rewards["total"]), cfg.algorithm.advantage, cfg.algorithm.advantage_eps
            ).numpy()
        with timer.phase("learn"):
            lr = lr_of(step)
            learner_stats = roles.learners.train_step(deal_samples(requests, answers, advantages,
                                                                   cfg.learner.num_ranks), lr)
        with timer.phase("sync"):
            if any(s["applied"] for s in learner_stats):  # nothing applied: the rollouts hold these weights
                roles.sync_weights(step)

        metrics = step_metrics(rewards, kept_answers, kept_mos, advantages[kept], learner_stats)
        metrics.update(timer.seconds)
        metrics.update({"time/step": sum(timer.seconds.values()), "learner/lr": lr,
                        "rollout/skipped_prompts": float(len(requests) - len(kept)),
                        "data/skipped_media": float(len(data.skipped)),
                        "faults/rollout_restarts": float(roles.rollouts.restarted)})
        return metrics

    status, started, digests = "FAILED", time.time(), None
    policy_dir = output_dir / "policy"
    try:
        with startup.phase("startup/validation"):
            if str(start_step) not in history["eval"]:
                validate(start_step)
        with startup.phase("startup/snapshot"):
            if cfg.health.enabled:
                snapshots.drop_after(start_step)  # from a trajectory that a crash cut short
                if start_step not in snapshots.steps():
                    save(snapshots, start_step)
        report_startup(startup.seconds, tracker, start_step)
        step = start_step
        while step < cfg.trainer.steps:
            step += 1
            metrics = grpo_step(step)
            history["steps"].append({"step": step, **{k: metrics[k] for k in CURVES if k in metrics}})
            if step % cfg.trainer.log_every == 0:
                tracker.log_metrics(metrics, step)
                print(progress_line(step, cfg.trainer.steps, metrics), flush=True)
            breach = guard.check(step, metrics) if cfg.health.enabled else None
            if breach:
                step = roll_back(breach, roles, cfg, snapshots, guard, sampler, history, tracker)
                continue
            if cfg.health.enabled and step % cfg.health.snapshot_every == 0 and step < cfg.trainer.steps:
                save(snapshots, step)
            if step % cfg.trainer.checkpoint_every == 0 and step < cfg.trainer.steps:
                save(checkpoints, step)
            if step % cfg.trainer.eval_every == 0 and step < cfg.trainer.steps:
                validate(step)

        if str(cfg.trainer.steps) not in history["eval"]:
            validate(cfg.trainer.steps)
        save(checkpoints, cfg.trainer.steps)
        roles.learners.save_pretrained(str(policy_dir))
        digests = roles.verify_sync(cfg, data.readable_eval()) if cfg.trainer.verify_sync else None
        final = history["eval"][str(cfg.trainer.steps)]
        scored_share = final["scored"] / max(final["items"] - final["unreadable"], 1)
        status = "FINISHED" if scored_share >= cfg.health.min_scored or not cfg.health.enabled else "FAILED"
    except (HealthError, RoleError, CheckpointError) as error:
        history["failure"] = str(error)
        raise
    finally:
        try:
            if history["steps"]:
                curves = output_dir / "curves.png"
                tracker.log_artifact(str(training_curves(history["steps"], history["eval"], curves, cfg.run.name)))
        finally:
            tracker.finish(status)
        if status != "FINISHED" and "failure" in history:
            (output_dir / "summary.json").write_text(json.dumps(
                {"status": status, "failure": history["failure"], "rollbacks": history["rollbacks"]}, indent=2))
    summary = summarise(cfg, history, start_step, time.time() - started, data, policy_dir)
    summary.update(status=status, weight_digests=digests, mlflow_run_id=tracker.run_id, placement=roles.placement,
                   learner_ranks=roles.learners.ranks_info, rollout_restarts=roles.rollouts.restarted,
                   replay_mismatch=tracker.replay_mismatch)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if status != "FINISHED":
        raise HealthError(
            f"the final policy scored {int(final['scored'])} of {int(final['items'] - final['unreadable'])} readable "
            f"held-out items ({scored_share:.0%}), below health.min_scored = {cfg.health.min_scored:.0%}: its answers "
            f"lost the format. The policy is in {policy_dir}, but do not use it; see {output_dir / 'curves.png'}."
        )
    return summary


if __name__ == "__main__":
    try:
        main()
    except (HealthError, RoleError, CheckpointError) as error:
        raise SystemExit(f"preresq: {error}") from None
