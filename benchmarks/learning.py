"""What the default CPU task learns, per reward, over several seeds: the PRPO ablation and its null control.

    python benchmarks/learning.py                       # 4 arms x seeds 0 1 2 (about 70 min on 2 cores)
    python benchmarks/learning.py --arms prpo null --seeds 0
    python benchmarks/learning.py --lr-multiples 4 10 100 --arms --seeds 0   # only the learning-rate stress

Each run is `make train`'s job (launch/grpo.py --config configs/local.yaml) with the arm's overrides, then
launch/evaluate.py on its final policy for the mean of 6 sampled answers per held-out image. Arms:
  prpo           the default reward (response + preference branches, format)
  abs_error      1 - |x - MOS| / 4 alone (no response or preference terms), with the format reward
  no_preference  PRPO without the preference branch (pairwise and triplet-ranking weights 0)
  null           PRPO with MOS shuffled across training images: what chance looks like
`--lr-multiples` also runs the PRPO arm at that many times configs/local.yaml's learning rate, which must
end healthy (through rollbacks) or stop non-zero naming the failure.

Writes to --out: results.md (per run and mean +- sd per arm), results.csv, srcc_over_steps.png. Runs
already finished there are read, not rerun, so an interrupted benchmark continues.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ARMS = {
    "prpo": [],
    "abs_error": ["reward.accuracy=absolute_error"],
    "no_preference": ["reward.pairwise=0", "reward.triplet_ranking=0"],
    "null": ["run.shuffle_labels=true"],
}
MANIFEST = ROOT / "artifacts" / "data" / "generated" / "manifest.parquet"


def run(command: list[str], log: Path) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def train_and_evaluate(name: str, overrides: list[str], out: Path, extra: list[str]) -> dict:
    """One training run and its mean-of-6 evaluation; the record of both (read back if already done)."""
    folder = out / name
    record_path = folder / "record.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    code = run([sys.executable, "launch/grpo.py", "--config", "configs/local.yaml", *overrides, *extra,
                f"run.output_dir={folder}", f"run.name=learning-{name}", "trainer.eval_every=50",
                f"tracking.uri=sqlite:///{out / 'mlflow.db'}"], folder / "train.log")
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    record = {"name": name, "exit_code": code, "train_seconds": time.time() - started,
              "rollbacks": len(summary.get("rollbacks", [])), "failure": summary.get("failure"),
              "val_history": summary.get("val_history", {}), "format_rate_last": summary.get("format_rate_last")}
    if code != 0 and not record["failure"]:
        record["failure"] = (folder / "train.log").read_text()[-600:]
    after = summary.get("val_after") or {}
    record.update(greedy_srcc=after.get("srcc"), greedy_plcc=after.get("plcc"),
                  scored_share=(after["scored"] / after["items"]) if after.get("items") else None)
    if (folder / "policy").is_dir():
        eval_dir = folder / "eval-mean6"
        run([sys.executable, "launch/evaluate.py", "--model", str(folder / "policy"), "--config", "configs/local.yaml",
             "--manifest", str(MANIFEST),
             "--split", "test", "--samples", "6", "--temperature", "0.6", "--max-new-tokens", "64", "--seed", "0",
             "--baseline", "none", "--no-tracking", "--threads", "2", "--output-dir", str(eval_dir)],
            folder / "eval.log")
        result = json.loads((eval_dir / "summary.json").read_text())["results"][0]
        record.update(mean6_srcc=result.get("srcc"), mean6_plcc=result.get("plcc"))
    record_path.write_text(json.dumps(record, indent=2))
    return record


def mean_sd(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    return f"{platform.machine()}, {os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def plot(records: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for colour, (arm, runs) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], records.items()):
        for k, r in enumerate(runs):
            points = sorted((int(s), v["srcc"]) for s, v in r["val_history"].items() if v.get("srcc") is not None)
            if points:
                ax.plot(*zip(*points), marker="o", color=colour, alpha=0.8, label=arm if k == 0 else None)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out SRCC (greedy)")
    ax.set_title("Held-out SRCC over training, one line per seed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(arms: dict[str, list[dict]], stress: list[dict], out: Path, seeds: list[int]) -> str:
    lines = [f"# Learning benchmark ({date.today()}; {machine()})", "",
             f"configs/local.yaml, seeds {', '.join(map(str, seeds))}; held-out: the test split (160 images of "
             "4 photos never trained on). Mean of 6: 6 answers per image at T = 0.6, evaluation seed 0.", "",
             "| arm | greedy SRCC | greedy PLCC | mean-of-6 SRCC | mean-of-6 PLCC | format rate (last 10%) | "
             "rollbacks | failed runs |", "|---|---|---|---|---|---|---|---|"]
    for arm, runs in arms.items():
        lines.append(f"| {arm} | {mean_sd([r['greedy_srcc'] for r in runs])} | "
                     f"{mean_sd([r['greedy_plcc'] for r in runs])} | {mean_sd([r.get('mean6_srcc') for r in runs])} | "
                     f"{mean_sd([r.get('mean6_plcc') for r in runs])} | "
                     f"{mean_sd([r['format_rate_last'] for r in runs])} | {sum(r['rollbacks'] for r in runs)} | "
                     f"{sum(r['exit_code'] != 0 for r in runs)} of {len(runs)} |")
    lines += ["", "Per run:", "", "| run | exit | greedy SRCC | mean-of-6 SRCC | held-out scored | rollbacks | "
              "minutes |", "|---|---|---|---|---|---|---|"]
    for runs in list(arms.values()) + [stress]:
        for r in runs:
            lines.append(f"| {r['name']} | {r['exit_code']} | {fmt(r['greedy_srcc'])} | {fmt(r.get('mean6_srcc'))} | "
                         f"{fmt(r['scored_share'])} | {r['rollbacks']} | {r['train_seconds'] / 60:.1f} |")
    for r in stress:
        if r["failure"]:
            lines += ["", f"{r['name']} stopped: {r['failure'].strip()}"]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    rows = [r for runs in list(arms.values()) + [stress] for r in runs]
    with (out / "results.csv").open("w", newline="") as f:
        keys = ["name", "exit_code", "greedy_srcc", "greedy_plcc", "mean6_srcc", "mean6_plcc", "scored_share",
                "format_rate_last", "rollbacks", "train_seconds"]
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if arms:
        plot(arms, out / "srcc_over_steps.png")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lr-multiples", nargs="*", type=float, default=[],
                   help="also run PRPO (first seed) at these multiples of configs/local.yaml's learner.lr")
    p.add_argument("--out", default="artifacts/learning")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run (e.g. a recipe to try)")
    args = p.parse_args()
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "launch/prepare.py"], cwd=ROOT, check=True)
    from launch.trainer.config import load_config

    base_lr = load_config(ROOT / "configs" / "local.yaml", args.set).learner.lr
    arms: dict[str, list[dict]] = {}
    for arm in args.arms:
        for seed in args.seeds:
            name = f"{arm}-seed{seed}"
            print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
            record = train_and_evaluate(name, [*ARMS[arm], f"run.seed={seed}"], out, args.set)
            arms.setdefault(arm, []).append(record)
            print(f"  exit {record['exit_code']}, greedy SRCC {fmt(record['greedy_srcc'])}, mean of 6 "
                  f"{fmt(record.get('mean6_srcc'))}, rollbacks {record['rollbacks']}", flush=True)
    stress = []
    for multiple in args.lr_multiples:
        name = f"prpo-lr{multiple:g}x-seed{args.seeds[0]}"
        print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
        record = train_and_evaluate(name, [f"run.seed={args.seeds[0]}", f"learner.lr={base_lr * multiple:g}"],
                                    out, args.set)
        stress.append(record)
        print(f"  exit {record['exit_code']}, held-out scored {fmt(record['scored_share'])}, rollbacks "
              f"{record['rollbacks']}", flush=True)
    print(report(arms, stress, out, args.seeds))


if __name__ == "__main__":
    main()
