"""The rest of a step's path, one run: how the step grows with the batch, the weight sync against an in-process
copy, and the PRPO reward against its loop formulation.

    python benchmarks/path_costs.py                         # batches 8 32 128 256, about 8 min on 2 cores
    python benchmarks/path_costs.py --batches 8 32 --steps 4

Each batch size is `make train`'s job (launch/grpo.py, configs/local.yaml, the tiny model, G 6, 64 new
tokens) for --steps steps, health guard and sync check off; medians from step 2 on, per phase, from the
run's MLflow store. Weight sync: the learner's gathered weights into the rollout actor through the Ray
object store (`time/sync`), against `load_state_dict` of the same weights within one process. Reward: the
vectorised batch function (`rewards.prpo.batch_rewards`) at B items x K 6, against the loop oracle
(`rewards/prpo_literal.py`), whose triplet term is O(B^3 K) and is timed at B 8..24 and extrapolated as
c B^3 to the larger batches (marked). Results: --out (results.md, results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from training_runs import step_medians, train  # beside this script

ROOT = Path(__file__).resolve().parent.parent

MODEL = ROOT / "artifacts" / "models" / "qwen2.5-vl-tiny"
G = 6
PHASES = ("step", "generate", "reward", "learn", "sync")


def run_batch(batch: int, steps: int, out: Path) -> dict:
    overrides = [f"trainer.batch_size={batch}", f"trainer.steps={steps}", "data.eval_limit=8",
                 f"trainer.eval_every={steps}", f"trainer.checkpoint_every={steps}", "health.enabled=false",
                 "trainer.verify_sync=false"]
    out.mkdir(parents=True, exist_ok=True)
    run = train(overrides, out / "run", out / "train.log")
    medians = step_medians(run, (*(f"time/{phase}" for phase in PHASES), "learner/tokens"), from_step=2)
    return {**{phase: medians[f"time/{phase}"] for phase in PHASES}, "tokens": medians["learner/tokens"]}


def in_process_copy() -> tuple[int, float]:
    """Bytes of the tiny model's weights and the seconds load_state_dict takes to copy them in one process."""
    import torch

    from models.loading import load_policy

    source, target = load_policy(MODEL, "float32", "cpu"), load_policy(MODEL, "float32", "cpu")
    weights = {k: v.detach().clone() for k, v in source.state_dict().items()}
    size = sum(v.numel() * v.element_size() for v in weights.values())
    times = []
    for _ in range(7):
        start = time.perf_counter()
        with torch.no_grad():
            target.load_state_dict(weights, strict=True)
        times.append(time.perf_counter() - start)
    return size, statistics.median(times)


def reward_costs(batches: list[int]) -> dict:
    import numpy as np

    from launch.trainer.config import load_config
    from rewards.answer_format import format_answer
    from rewards.prpo import PRPOWeights, batch_rewards, pairwise_score_rank, triplet_ranking
    from rewards.prpo_literal import literal_pairwise, literal_triplet_ranking

    reward = load_config().reward
    weights = PRPOWeights.from_config(reward)
    rng = np.random.default_rng(0)

    def best(fn, *args, repeats=3):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - start)
        return min(times)

    small = [8, 16, 24]
    cubic = []
    for b in small:  # the loop triplet term's c in c B^3
        s, y = rng.uniform(1, 5, (b, G)).round(2), rng.uniform(1, 5, b)
        cubic.append(best(literal_triplet_ranking, s, y, repeats=1) / b**3)
    c = statistics.median(cubic)
    out = {}
    for b in batches:
        scores = rng.uniform(1, 5, (b, G, 5)).round(2)
        texts = [[format_answer("The sharpness is soft.", v) for v in row] for row in scores]
        mos = rng.uniform(1, 5, b)
        whole = best(batch_rewards, texts, mos, ["iqa"] * b, weights, reward.format_weight, reward.accuracy_weight,
                     None, reward.accuracy)
        s = scores.mean(-1)
        vector = best(pairwise_score_rank, s, mos) + best(triplet_ranking, s, mos)
        loops_pairwise = best(literal_pairwise, s, mos, repeats=1)
        out[b] = {"batch_rewards": whole, "preference_vectorised": vector,
                  "preference_loops": loops_pairwise + c * b**3, "loops_extrapolated": b > small[-1]}
    return out


def report(runs: dict, copy: tuple[int, float], rewards: dict, steps: int) -> str:
    size, seconds = copy
    lines = [f"# The path of a step ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}. make train's job (tiny model, G {G}, 64 new tokens), {steps} steps a "
             "batch size, medians from step 2 on (seconds).", "",
             "| items a step | answers | step | generate | reward | learn | sync | learner tokens "
             "| step / answer (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for b, r in runs.items():
        lines.append(f"| {b} | {b * G} | {r['step']:.2f} | {r['generate']:.2f} | {r['reward']:.3f} | "
                     f"{r['learn']:.2f} | "
                     f"{r['sync']:.3f} | {r['tokens']:.0f} | {1000 * r['step'] / (b * G):.1f} |")
    syncs = [r["sync"] for r in runs.values()]
    lines += ["", f"Weight sync ({size / 2**20:.1f} MiB of fp32 weights, learner -> rollout actor through the object "
              f"store, median over the runs): {statistics.median(syncs) * 1000:.1f} ms, "
              f"{size / statistics.median(syncs) / 2**20:.0f} MiB/s; `load_state_dict` of the same weights in one "
              f"process: {seconds * 1000:.1f} ms, {size / seconds / 2**20:.0f} MiB/s "
              f"(ratio {statistics.median(syncs) / seconds:.1f}x).", "",
              "| items | answers | batch_rewards (ms) | preference, vectorised (ms) | preference, loops (ms) | loops / "
              "vectorised | reward actor's share of the step |", "|---|---|---|---|---|---|---|"]
    for b, r in rewards.items():
        share = f"{runs[b]['reward'] / runs[b]['step']:.1%}" if b in runs else ""
        loops = f"{r['preference_loops'] * 1000:.0f}{' (extrapolated)' if r['loops_extrapolated'] else ''}"
        lines.append(f"| {b} | {b * G} | {r['batch_rewards'] * 1000:.1f} | {r['preference_vectorised'] * 1000:.2f} | "
                     f"{loops} | {r['preference_loops'] / r['preference_vectorised']:.0f}x | {share} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128, 256])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "path_costs"))
    args = p.parse_args()
    if not (MODEL / "config.json").is_file():
        raise SystemExit(f"{MODEL} is missing: run `make prepare` first")
    out = Path(args.out)
    runs = {}
    for b in args.batches:
        print(f"batch {b} ...", flush=True)
        runs[b] = run_batch(b, args.steps, out / f"batch-{b}")
        print(f"batch {b}: {runs[b]['step']:.2f} s a step", flush=True)
    copy = in_process_copy()
    rewards = reward_costs(args.batches)
    text = report(runs, copy, rewards, args.steps)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"runs": runs, "copy": copy, "rewards": rewards}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
