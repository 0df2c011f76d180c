"""What a step and a run report: the per-step metrics, the progress line, the run's summary."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from evaluation.quality_metrics import quality_metrics
from launch.trainer.run_record import RunRecord
from rewards.prpo import BatchRewards

# Per-step metrics kept in the checkpointed history, for the summary and the curves plot.
CURVES = ("reward/total", "reward/accuracy", "reward/response", "reward/preference", "reward/format",
          "answers/parse_rate", "answers/within_group_spread", "answers/batch_srcc", "learner/kl", "learner/lr",
          "groups/all_equal_fraction")


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[f"time/{name}"] = time.perf_counter() - start


def step_metrics(rewards: BatchRewards, answers: list, mos: list[float], advantages: np.ndarray,
                 learner_stats: list[dict]) -> dict:
    predictions = rewards.predictions
    texts = [c.text for row in answers for c in row]
    equal_groups = np.ptp(rewards.terms["total"], axis=1) == 0
    metrics = {f"reward/{term}": value.mean() for term, value in rewards.terms.items()}
    metrics.update({
        "advantage/mean": advantages.mean(),
        "advantage/std": advantages.std(),
        "advantage/abs_max": np.abs(advantages).max(),
        "groups/all_equal_fraction": equal_groups.mean(),
        "answers/within_group_spread": predictions.std(axis=1).mean(),
        "answers/distinct": float(len(set(texts))),
        "answers/distinct_share": len(set(texts)) / max(len(texts), 1),
        "answers/parse_rate": rewards.parsed.mean(),
        "answers/distinct_scores": float(len(np.unique(predictions.round(2)))),
        "answers/prediction_mean": predictions.mean(),
        "response_length": float(np.mean([len(c.token_ids) for row in answers for c in row])),
    })
    item_means = predictions.mean(axis=1)
    metrics["answers/item_spread"] = float(item_means.std())
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


def progress_line(step: int, steps: int, m: dict) -> str:
    return (
        f"step {step}/{steps} reward {m['reward/total']:.3f} (acc {m['reward/accuracy']:.3f} "
        f"fmt {m['reward/format']:.2f}) spread {m['answers/within_group_spread']:.3f} "
        f"kl {m.get('learner/kl', float('nan')):.4f} |g| {m['learner/grad_norm']:.3f} lr {m['learner/lr']:.2g} "
        f"{m['time/step']:.2f}s"
    )


def summarise(cfg, record: RunRecord, start_step: int, seconds: float, data, policy_dir: Path) -> dict:
    rewards = [s["reward/total"] for s in record.curves]
    evals = record.evals
    first, last = evals[min(evals)], evals[max(evals)]
    tenth = max(1, len(rewards) // 10)
    summary = {
        "steps": cfg.trainer.steps,
        "steps_this_run": cfg.trainer.steps - start_step,
        "seconds": seconds,
        "reward_first": float(np.mean(rewards[:tenth])) if rewards else None,
        "reward_last": float(np.mean(rewards[-tenth:])) if rewards else None,
        "val_before": first,
        "val_after": last,
        "val_history": {str(step): {k: evals[step].get(k) for k in ("srcc", "plcc", "scored", "items")}
                        for step in sorted(evals)},
        "format_rate_last": (float(np.mean([s["reward/format"] for s in record.curves[-tenth:]]))
                             if rewards else None),
        # groups whose G rewards were all equal (no gradient; what algorithm.dynamic_sampling refills)
        "flat_groups": (float(np.mean([s.get("groups/all_equal_fraction", 0.0) for s in record.curves]))
                        if rewards else None),
        "skipped_media": sorted(data.skipped),
        "rollbacks": [asdict(r) for r in record.rollbacks],
        "policy": str(policy_dir),
        # True when the final policy gives every held-out item ~one score (under health.val_spread.min)
        "flat_policy": (last.get("prediction_std") is not None and cfg.health.val_spread.min is not None
                        and last["prediction_std"] < cfg.health.val_spread.min),
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
    if summary["flat_policy"]:
        print(f"warning: the final policy gives the held-out items one score (val/prediction_std "
              f"{last['prediction_std']:.3g}, under health.val_spread.min = {cfg.health.val_spread.min}): it has "
              "not learned to tell the pictures apart; try another run.seed or more trainer.steps")
    if rewards:
        print(f"groups with all-equal rewards (no gradient): {summary['flat_groups']:.1%} of the run's groups")
    print(f"health: {len(summary['rollbacks'])} rollbacks"
          + "".join(f"\n  step {e['step']}: {e['message']} -> back to step {e['to_step']}, lr x{e['lr_scale']:g}"
                    for e in summary["rollbacks"]))
    print(f"skipped media: {len(data.skipped)}")
    print(f"policy (Hugging Face format): {policy_dir}")
    return summary
