"""preresq's single controller: GRPO with the PRPO reward over Ray actors.

    python launch/grpo.py --config configs/local.yaml trainer.steps=20
    ray job submit --working-dir . -- python launch/grpo.py --config configs/local.yaml

Without a cluster address it starts an embedded single-node Ray; under `ray job submit` it joins
the job's cluster. The loop: batch -> generate -> reward -> advantages -> learn -> sync -> log,
checkpoint, evaluate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from actors.groups import RoleError, bounded_get, connect_ray, retrying, start_roles, wait_alive  # noqa: E402
from actors.grpo import group_advantages  # noqa: E402
from actors.learner import TrainSample  # noqa: E402
from actors.lr_schedule import learning_rate  # noqa: E402
from evaluation.quality_metrics import quality_metrics  # noqa: E402
from evaluation.validation import evaluate  # noqa: E402
from launch.trainer import checkpoint  # noqa: E402
from launch.trainer.checkpoint import CheckpointError, CheckpointStore  # noqa: E402
from launch.trainer.config import ConfigError, flatten, load_config  # noqa: E402
from launch.trainer.health import Breach, HealthError, HealthGuard  # noqa: E402
from launch.trainer.plots import training_curves  # noqa: E402
from launch.trainer.tracking import Tracker  # noqa: E402
from qadata.media import MediaError  # noqa: E402
from qadata.requests import RunData  # noqa: E402
from qadata.sampler import BatchSampler  # noqa: E402
from rollouts.backend import SamplingSettings  # noqa: E402
from rollouts.processor import require_model_folder  # noqa: E402


# What the reward actor returns besides reward terms: each answer's score and whether it parsed.
ANSWER_FIELDS = ("prediction", "parsed")
# Per-step metrics kept in the checkpointed history, for the summary and the curves plot.
CURVES = ("reward/total", "reward/accuracy", "reward/response", "reward/preference", "format_rate",
          "answers/parse_rate", "answers/within_group_spread", "answers/batch_srcc", "learner/kl", "learner/lr")


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[f"time/{name}"] = time.perf_counter() - start


def check_inputs(cfg) -> None:
    """Fail before any actor starts when a path the run needs is missing."""
    require_model_folder(cfg.model.path)
    for path in (cfg.data.train_manifest, cfg.data.eval_manifest):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"manifest not found: {path}")


def init_ray(cfg) -> None:
    needed = cfg.rollout.num_actors + cfg.learner.num_ranks * cfg.learner.cpus_per_rank
    connect_ray(cfg.ray.address, cfg.ray.num_cpus or max(os.cpu_count() or 1, math.ceil(needed)))


def answered(answers: list) -> list[int]:
    """Indices of the items the rollout engine answered (vLLM skips a prompt too long for it, by option)."""
    return [i for i, row in enumerate(answers) if not any(c.skipped for c in row)]


def score(cfg, reward, answers: list, mos: list[float], tasks: list[str]) -> dict[str, np.ndarray]:
    """The reward actor's terms for every answer; a dead reward actor is restarted and asked again."""
    texts = [[c.text for c in row] for row in answers]
    return retrying(
        lambda: bounded_get(reward.score.remote(texts, mos, tasks), cfg.reward.timeout_s, "reward actor",
                            "reward.timeout_s"),
        cfg.reward.max_restarts, "reward actor", "reward.max_restarts",
        lambda: wait_alive(reward, cfg.reward.timeout_s, "reward actor", "reward.timeout_s"))


def learning_samples(requests, answers, advantages: np.ndarray, ranks: int) -> list[list]:
    """Answers with their advantages, dealt evenly to the learner ranks."""
    samples = [
        TrainSample(req.images, req.messages, c.token_ids, float(advantages[i, k]), c.logprobs)
        for i, (req, row) in enumerate(zip(requests, answers))
        for k, c in enumerate(row)
    ]
    return [samples[r::ranks] for r in range(ranks)]


def step_metrics(rewards: dict, answers: list, mos: list[float], advantages: np.ndarray,
                 learner_stats: list[dict]) -> dict:
    predictions = rewards["prediction"]
    texts = [c.text for row in answers for c in row]
    equal_groups = np.ptp(rewards["total"], axis=1) == 0
    # Every term the reward actor returns is logged; "prediction" and "parsed" are answers, not rewards.
    metrics = {f"reward/{term}": value.mean() for term, value in rewards.items() if term not in ANSWER_FIELDS}
    metrics.update({
        "format_rate": rewards["format"].mean(),
        "advantage/mean": advantages.mean(),
        "advantage/std": advantages.std(),
        "advantage/abs_max": np.abs(advantages).max(),
        "groups/all_equal_fraction": equal_groups.mean(),
        "answers/within_group_spread": predictions.std(axis=1).mean(),
        "answers/distinct": float(len(set(texts))),
        "answers/distinct_share": len(set(texts)) / max(len(texts), 1),
        "answers/parse_rate": rewards["parsed"].mean(),
        "answers/distinct_scores": float(len(np.unique(predictions.round(2)))),
        "answers/prediction_mean": predictions.mean(),
        "response_length": float(np.mean([len(c.token_ids) for row in answers for c in row])),
    })
    item_means = predictions.mean(axis=1)
    batch_srcc = quality_metrics(item_means, np.asarray(mos))["srcc"]
    if batch_srcc is not None:
        metrics["answers/batch_srcc"] = batch_srcc
    for key in ("loss", "policy_loss", "kl", "clip_fraction", "entropy", "logprob_gap", "is_weight", "is_capped"):
        values = [s[key] for s in learner_stats if key in s]
        if values:  # a rank whose every micro-batch was rejected has none
            metrics[f"learner/{key}"] = float(np.mean(values))
    metrics["learner/nonfinite"] = float(np.mean([s["nonfinite"] for s in learner_stats]))
    metrics["learner/grad_norm"] = float(max(s["grad_norm"] for s in learner_stats))
    tokens = sum(s["tokens"] for s in learner_stats)
    metrics["learner/tokens"] = tokens
    return {k: float(v) for k, v in metrics.items()}


# Keys that cannot change what a run computes: a resume may change them without being asked.
RESULT_NEUTRAL = ("run.name", "run.resume", "run.allow_config_change", "run.output_dir", "tracking.", "ray.",
                  "eval.", "data.eval_", "trainer.log_every", "trainer.eval_every", "trainer.checkpoint_every",
                  "trainer.keep_checkpoints", "trainer.verify_sync", "placement.timeout_s")


def result_config(cfg) -> dict:
    """The flattened config minus the keys that do not change the result (timeouts, restarts, logging)."""
    return {k: v for k, v in flatten(cfg).items()
            if not k.startswith(RESULT_NEUTRAL) and not k.endswith(("timeout_s", "max_restarts"))}


def config_changes(saved: dict, now: dict) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}" for k in keys
            if saved.get(k, "(absent)") != now.get(k, "(absent)")]


def trainer_state(cfg, step: int, sampler: BatchSampler, tracker: Tracker, history: dict, guard: HealthGuard,
                  data: RunData) -> dict:
    """Everything besides the learner's DeepSpeed state that the steps after `step` depend on."""
    return {
        "step": step,
        "sampler": sampler.state(),
        "rng": {"torch": torch.get_rng_state().tolist(), "seed": cfg.run.seed},
        "mlflow_run_id": tracker.run_id,
        "history": history,
        "health_window": guard.state(),
        "skipped_media": data.skipped,
        "config": result_config(cfg),
    }


def sampling_seed(seed: int, step: int, rollbacks: int) -> int:
    """Each step's sampling seed; a rollback moves it on, so a redone step draws other answers."""
    return seed * 100003 + step + 1_000_003 * rollbacks


def roll_back(breach: Breach, roles, cfg, snapshots: CheckpointStore, guard: HealthGuard, sampler: BatchSampler,
              history: dict, tracker: Tracker) -> int:
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


def resume_state(cfg, checkpoints: CheckpointStore) -> tuple[Path | None, dict | None]:
    """The newest verified checkpoint and its state, or (None, None); refused (SystemExit) when the
    checkpoint is not what was committed, or when the config changed in a key that changes the result."""
    if not cfg.run.resume:
        return None, None
    try:
        folder = checkpoints.latest()
    except CheckpointError as error:
        raise SystemExit(f"preresq: cannot resume: {error}") from None
    if folder is None:
        return None, None
    state = checkpoint.read_state(folder)
    changes = config_changes(state.get("config", {}), result_config(cfg))
    if changes and not cfg.run.allow_config_change:
        raise SystemExit(
            f"preresq: {folder} was written with another config, and resuming it with this one would not give the "
            f"run it started: {'; '.join(changes[:8])}{' ...' if len(changes) > 8 else ''}. Use another "
            "run.output_dir for a new run, or pass run.allow_config_change=true to resume anyway.")
    return folder, state


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML overriding configs/base.yaml")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.steps=20")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        check_inputs(cfg)
    except (ConfigError, FileNotFoundError) as error:
        raise SystemExit(f"preresq: {error}") from None
    torch.manual_seed(cfg.run.seed)
    output_dir = Path(cfg.run.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = CheckpointStore(output_dir / "checkpoints", cfg.trainer.keep_checkpoints)
    snapshots = CheckpointStore(output_dir / "healthy", cfg.health.keep_snapshots, "healthy snapshot")
    resume_from, state = resume_state(cfg, checkpoints)
    data = RunData(cfg)

    init_ray(cfg)
    roles = start_roles(cfg)
    if roles.placement:
        print(f"placement group ({roles.placement['mode']}, {roles.placement['strategy']}): bundles "
              f"{roles.placement['bundles']}, rollouts in {roles.placement['rollout_bundles']}, learner ranks in "
              f"{roles.placement['learner_bundles']}", flush=True)
    tracker = Tracker(
        cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment, cfg.run.name,
        flatten(cfg), run_id=state["mlflow_run_id"] if state else None,
        unsent_path=output_dir / "mlflow-unsent.jsonl",
    )
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

    sampling = SamplingSettings(
        n=cfg.rollout.group_size, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_new_tokens,
    )

    def validate(step: int) -> dict:
        result = evaluate(
            roles.rollouts, data.eval, data.load, data.task_of, cfg.eval.greedy, cfg.eval.samples,
            cfg.eval.max_new_tokens, cfg.eval.batch_size, cfg.rollout.temperature, seed=cfg.run.seed,
        )
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

    status, started, digests = "FAILED", time.time(), None
    policy_dir = output_dir / "policy"
    try:
        if str(start_step) not in history["eval"]:
            validate(start_step)
        if cfg.health.enabled:
            snapshots.drop_after(start_step)  # from a trajectory that a crash cut short
            if start_step not in snapshots.steps():
                save(snapshots, start_step)
        step = start_step
        while step < cfg.trainer.steps:
            step += 1
            timer = Timer()
            with timer.phase("batch"):
                requests, mos = data.batch(sampler, cfg.trainer.batch_size)
            with timer.phase("generate"):
                seed = sampling_seed(cfg.run.seed, step, len(history["rollbacks"]))
                answers = roles.rollouts.generate(requests, replace(sampling, seed=seed))
            kept = answered(answers)  # a skipped item is not scored, and trained on with no tokens and advantage 0
            if not kept:
                raise RuntimeError(f"step {step}: the rollout engine skipped every prompt of the batch as too long: "
                                   "raise rollout.vllm.max_model_len or lower model.max_pixels")
            kept_answers, kept_mos = [answers[i] for i in kept], [mos[i] for i in kept]
            with timer.phase("reward"):
                rewards = score(cfg, roles.reward, kept_answers, kept_mos, [requests[i].task for i in kept])
            with timer.phase("advantage"):
                advantages = np.zeros((len(requests), cfg.rollout.group_size))
                advantages[kept] = group_advantages(
                    torch.as_tensor(rewards["total"]), cfg.algorithm.advantage, cfg.algorithm.advantage_eps
                ).numpy()
            with timer.phase("learn"):
                shards = learning_samples(requests, answers, advantages, cfg.learner.num_ranks)
                lr = lr_of(step)
                learner_stats = roles.learners.train_step(shards, lr)
            with timer.phase("sync"):
                if any(s["applied"] for s in learner_stats):  # nothing applied: the rollouts hold these weights
                    roles.sync_weights(step)

            metrics = step_metrics(rewards, kept_answers, kept_mos, advantages[kept], learner_stats)
            metrics.update(timer.seconds)
            metrics["rollout/skipped_prompts"] = float(len(requests) - len(kept))
            metrics.update({"time/step": sum(timer.seconds.values()), "learner/lr": lr,
                            "data/skipped_media": float(len(data.skipped)),
                            "faults/rollout_restarts": float(roles.rollouts.restarted)})
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
        digests = verify_sync(roles, cfg, data) if cfg.trainer.verify_sync else None
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


def progress_line(step: int, steps: int, m: dict) -> str:
    return (
        f"step {step}/{steps} reward {m['reward/total']:.3f} (acc {m['reward/accuracy']:.3f} "
        f"fmt {m['format_rate']:.2f}) spread {m['answers/within_group_spread']:.3f} "
        f"kl {m.get('learner/kl', float('nan')):.4f} |g| {m['learner/grad_norm']:.3f} lr {m['learner/lr']:.2g} "
        f"{m['time/step']:.2f}s"
    )


def verify_sync(roles, cfg, data: RunData) -> dict:
    """The rollout actors hold the learner's weights, or a RuntimeError.

    transformers backend: hashes of the learner's weights and of every rollout actor's must be equal.
    vLLM keeps fused weights, so there its greedy answers on the readable validation items must equal
    those of a transformers copy given the learner's weights."""
    timeout_s = cfg.rollout.generate_timeout_s
    if cfg.rollout.backend == "hf":
        learner = roles.learners.weights_digest()
        rollouts = roles.rollouts.on_each("weights_digest", timeout_s=timeout_s, option="rollout.generate_timeout_s")
        if any(d != learner for d in rollouts):
            short = [d[:12] for d in rollouts]
            raise RuntimeError(f"weight sync failed: learner {learner[:12]} but rollout actors {short}")
        return {"learner": learner, "rollouts": rollouts}
    from actors.rollout import RolloutWorker

    requests = []
    for item in data.eval:
        try:
            requests.append(data.load(item))
        except MediaError:
            pass
    m = cfg.model
    copy = ray.remote(num_cpus=0)(RolloutWorker).remote("hf", m.path, m.dtype, "cpu", cfg.rollout.prompt_chunk,
                                                         m.min_pixels, m.max_pixels, cfg.rollout.threads)
    bounded_get(copy.load_weights.remote(roles.learners.full_weights(), 0), cfg.rollout.sync_timeout_s,
                "transformers copy", "rollout.sync_timeout_s")
    greedy = SamplingSettings(n=1, greedy=True, max_new_tokens=cfg.eval.max_new_tokens)
    expected = [row[0].token_ids for row in bounded_get(copy.generate.remote(requests, greedy), timeout_s,
                                                        "transformers copy", "rollout.generate_timeout_s")]
    ray.kill(copy)
    result = {"items": len(requests), "answer_tokens": sum(map(len, expected)), "rollouts": []}
    for index in range(len(roles.rollouts)):
        answers = [row[0] for row in roles.rollouts.result(roles.rollouts.submit(index, requests, greedy))]
        skipped = [r.item_id for r, a in zip(requests, answers) if a.skipped]  # too long for the engine
        differ = [r.item_id for r, a, b in zip(requests, answers, expected) if not a.skipped and a.token_ids != b]
        result["rollouts"].append({"equal": len(requests) - len(differ) - len(skipped), "differ": differ,
                                   "skipped": skipped})
        if differ:
            raise RuntimeError(f"weight sync failed: rollout actor {index}'s greedy answers differ from the "
                               f"learner's weights' on {len(differ)} of {len(requests)} items ({differ[:3]})")
    return result


def summarise(cfg, history: dict, start_step: int, seconds: float, data: RunData, policy_dir: Path) -> dict:
    rewards = [s["reward/total"] for s in history["steps"]]
    evals = history["eval"]
    first, last = evals[min(evals, key=int)], evals[max(evals, key=int)]
    tenth = max(1, len(rewards) // 10)
    summary = {
        "steps": cfg.trainer.steps,
        "steps_this_run": cfg.trainer.steps - start_step,
        "seconds": seconds,
        "reward_first": float(np.mean(rewards[:tenth])) if rewards else None,
        "reward_last": float(np.mean(rewards[-tenth:])) if rewards else None,
        "val_before": first,
        "val_after": last,
        "val_history": {step: {k: evals[step].get(k) for k in ("srcc", "plcc", "scored", "items")}
                        for step in sorted(evals, key=int)},
        "format_rate_last": float(np.mean([s["format_rate"] for s in history["steps"][-tenth:]])) if rewards else None,
        "skipped_media": sorted(data.skipped),
        "rollbacks": history.get("rollbacks", []),
        "policy": str(policy_dir),
    }

    def fmt(x):
        return "undefined" if x is None else f"{x:.3f}"

    print("\n== preresq GRPO summary ==")
    print(f"steps: {summary['steps']} ({summary['steps_this_run']} this run, {seconds:.0f}s)")
    if rewards:
        print(f"reward: first 10% of steps {fmt(summary['reward_first'])} -> last 10% {fmt(summary['reward_last'])}")
    print(f"validation before: SRCC {fmt(first['srcc'])} PLCC {fmt(first['plcc'])}; "
          f"after: SRCC {fmt(last['srcc'])} PLCC {fmt(last['plcc'])} ({int(last['scored'])} of "
          f"{int(last['items'])} held-out items scored)")
    print(f"health: {len(summary['rollbacks'])} rollbacks"
          + "".join(f"\n  step {e['step']}: {e['message']} -> back to step {e['to_step']}, lr x{e['lr_scale']:g}"
                    for e in summary["rollbacks"]))
    print(f"skipped media: {len(data.skipped)}")
    print(f"policy (Hugging Face format): {policy_dir}")
    return summary


if __name__ == "__main__":
    try:
        main()
    except (HealthError, RoleError, CheckpointError) as error:
        raise SystemExit(f"preresq: {error}") from None
