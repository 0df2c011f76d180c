"""make train's job in turn and one step off (trainer.max_staleness 0 / 1), at each split of the cores: seconds
per step, their ratio to make train's own setting, each role's busy share and tokens/s, all in one run.

    .venv/bin/python benchmarks/async_overlap.py                  # 4 settings x 40 steps, about 5 min on 2 cores
    .venv/bin/python benchmarks/async_overlap.py --steps 60 --settings sync-2/2 async-1/1

A setting is `sync-R/L` or `async-R/L`: in turn or one step off, R torch threads for the rollout actor and L for
the learner (configs/local.yaml: sync-2/2, the two roles taking turns on both cores). One step off also sets
algorithm.rollout_is truncated, which it requires. Step time is the median of MLflow's time/step from step 3 on.
A role's busy share is the time its actor spent in generate (rollout) or train_step (learner) over the same
steps' wall time, from the calls' own clocks (PRERESQ_CALL_LOG, actors/call_hooks.py); tokens/s is the median
of learner/tokens (every sampled answer token, each trained on) over the median step. Results: --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from training_runs import step_medians, train  # beside this script

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ("sync-2/2", "sync-1/1", "async-1/1", "async-2/2")
FROM_STEP = 3


def overrides(setting: str, steps: int) -> list[str]:
    mode, threads = setting.split("-")
    rollout, learner = threads.split("/")
    if mode not in ("sync", "async") or not (rollout.isdigit() and learner.isdigit()):
        raise SystemExit(f"--settings: {setting!r} is not sync-R/L or async-R/L (R, L: thread counts)")
    extra = ["trainer.max_staleness=1", "algorithm.rollout_is=truncated"] if mode == "async" else []
    return [f"trainer.steps={steps}", f"rollout.threads={rollout}", f"learner.threads={learner}", *extra]


def busy_seconds(log: Path, call: str, window: tuple[float, float]) -> float:
    """Seconds of `call` (all its actors' logs in `log`) inside the wall-clock window."""
    total = 0.0
    for file in log.glob(f"{call}-*.jsonl"):
        for line in file.read_text().splitlines():
            span = json.loads(line)
            total += max(0.0, min(span["end"], window[1]) - max(span["start"], window[0]))
    return total


def measure(setting: str, steps: int, work: Path) -> dict:
    log = work / "calls"
    run = train(overrides(setting, steps), work / "run", work / "train.log", env={"PRERESQ_CALL_LOG": str(log)})
    learned = sorted((json.loads(line) for f in log.glob("train_step-*.jsonl") for line in f.read_text().splitlines()),
                     key=lambda span: span["end"])
    # From the end of step FROM_STEP - 1's learning to the end of the last: whole steps, no validation in them.
    window = (learned[FROM_STEP - 2]["end"], learned[-1]["end"])
    wall = window[1] - window[0]
    keys = ("time/step", "learner/tokens", "learner/logprob_gap", "learner/entropy",
            *(("learner/is_weight", "learner/is_capped") if "async" in setting else ()))
    medians = step_medians(run, keys, FROM_STEP)
    return {"setting": setting, "step_s": medians["time/step"], "steps_timed": len(learned) - FROM_STEP + 1,
            "rollout_busy": busy_seconds(log, "generate", window) / wall,
            "learner_busy": busy_seconds(log, "train_step", window) / wall,
            "tokens_per_s": medians["learner/tokens"] / medians["time/step"],
            "logprob_gap": medians["learner/logprob_gap"], "entropy": medians["learner/entropy"],
            "is_weight": medians.get("learner/is_weight"), "is_capped": medians.get("learner/is_capped"),
            "srcc_after": run["val_after"].get("srcc"), "weights": run["weight_digests"]["learner"][:12]}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def report(rows: list[dict], steps: int) -> str:
    base = rows[0]["step_s"]
    lines = [f"# make train's job, in turn and one step off ({steps} steps, medians from step {FROM_STEP})", "",
             f"Machine: {machine()}. Command: `python benchmarks/async_overlap.py --steps {steps} --settings "
             f"{' '.join(r['setting'] for r in rows)}`. Ratio: step time over {rows[0]['setting']}'s, same run.", "",
             "| setting | step (s) | ratio | rollout busy | learner busy | tokens/s | per-token gap | IS weight | "
             "at cap | entropy | held-out SRCC after |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(value, form: str) -> str:
        return "-" if value is None else format(value, form)

    for r in rows:
        lines.append(f"| {r['setting']} | {r['step_s']:.3f} | {r['step_s'] / base:.2f} | {r['rollout_busy']:.0%} | "
                     f"{r['learner_busy']:.0%} | {r['tokens_per_s']:.0f} | {r['logprob_gap']:.4f} | "
                     f"{cell(r['is_weight'], '.4f')} | {cell(r['is_capped'], '.2%')} | {r['entropy']:.3f} | "
                     f"{cell(r['srcc_after'], '.3f')} |")
    lines += ["", "Per-token gap: mean |log pi_learner - log pi_rollout| of the sampled tokens (one step off: the "
              "weights one version back; in turn: the two engines' numerics only). IS weight and at cap: "
              "algorithm.rollout_is truncated's mean weight and share of tokens at rollout_is_cap."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="sync-R/L or async-R/L each; the "
                        "first is the baseline of the ratio")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "async_overlap")
    args = parser.parse_args()
    if args.steps < FROM_STEP + 2:
        raise SystemExit(f"--steps {args.steps}: at least {FROM_STEP + 2}, the timing starts at step {FROM_STEP}")
    for setting in args.settings:
        overrides(setting, args.steps)  # every setting checked before the first run
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for setting in args.settings:
            print(f"{setting}: {args.steps} steps ...", flush=True)
            rows.append(measure(setting, args.steps, Path(scratch) / setting.replace("/", "_")))
            r = rows[-1]
            print(f"  {r['step_s']:.3f} s a step, rollout busy {r['rollout_busy']:.0%}, learner busy "
                  f"{r['learner_busy']:.0%}, {r['tokens_per_s']:.0f} tokens/s", flush=True)
    text = report(rows, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "steps": args.steps, "rows": rows},
                                                        indent=2) + "\n")
    print(text)
    print(f"results: {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
