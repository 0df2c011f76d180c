"""What the default CPU task learns, per arm, over several seeds: the PRPO ablation, its null control, and how
far each final policy generalises.

    python benchmarks/learning.py                       # every arm: 6 seeds of prpo and null, 3 of the others
    python benchmarks/learning.py --arms prpo null --seeds 0 1 2 3 4 5    # the default job's table
    python benchmarks/learning.py --arms two_stage --seeds 2              # one arm, one seed (resumable)
    python benchmarks/learning.py --lr-multiples 4 10 100 --arms --seeds 0   # only the learning-rate stress

Each run is `make train`'s job (launch/grpo.py --config configs/local.yaml) with the arm's overrides, then
launch/evaluate.py on its final policy: the mean of 6 sampled answers per held-out image of the training set's
test split, and the generalisation columns, read with the expected readout (deterministic; a tiny model's greedy
answers can tie across a small set): the CI-size generated benchmark's held-out photo (other content than any
training image) under the four global distortion types training saw, and, separately, its distortion types
training never saw (blur, noise, compression, ...). Arms:
  prpo           the default reward (response + preference branches, format)
  abs_error      1 - |x - MOS| / 4 alone (no response or preference terms), with the format reward
  no_preference  PRPO without the preference branch (pairwise and triplet-ranking weights 0)
  two_stage      PRPO in the paper's two stages: 100 steps asking a paraphrase per item, then 100 on the question
  dynamic        PRPO with dynamic sampling (flat groups refilled, up to 8 extra items a step)
  null           PRPO with MOS shuffled across training images: what chance looks like (the spread floors off:
                 with no label information its policy drifts to one score for every picture, and they would fail it)
  lora           PRPO training LoRA adapters (rank 8) over the frozen base instead of every weight
  async          PRPO one step off: each batch answered during the step before, importance-weighted (truncated)
`--lr-multiples` also runs the PRPO arm at that many times configs/local.yaml's learning rate, which must
end healthy (through rollbacks) or stop non-zero naming the failure.

Writes to --out: results.md (per run and mean +- sd per arm), results.csv, srcc_over_steps.png. Runs
already finished there are read, not rerun, so an interrupted benchmark continues; `--report` trains nothing and
writes them from the runs finished so far.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
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
    "two_stage": ["trainer.stages=[{name: explore, steps: 100, overrides: {data: {question: pool}}}, "
                  "{name: settle, steps: 100}]"],
    "dynamic": ["algorithm.dynamic_sampling.enabled=true", "algorithm.dynamic_sampling.max_extra_items=8"],
    # Shuffled labels carry no picture information, so the policy drifts to one score for every picture: the
    # spread floors would roll it back until it fails. Off here, so that the control ends and is measured.
    "null": ["run.shuffle_labels=true", "health.val_spread.min=0", "health.item_spread.min=0"],
    # LoRA rank 8 on every language linear layer and the vision attention (base.yaml's targets), at the learning
    # rate a sweep on seed 0 chose (docs/results.md, "LoRA").
    "lora": ["learner.lora.rank=8", "learner.lr=2e-3"],
    # One step off (trainer.max_staleness 1), each answer corrected by truncated importance weights, one thread a
    # role: the fastest setting on 2 cores (benchmarks/async_overlap.py).
    "async": ["trainer.max_staleness=1", "algorithm.rollout_is=truncated", "rollout.threads=1", "learner.threads=1"],
}
SEEDS = {"prpo": 6, "null": 6}  # seeds 0..n-1 of each arm by default; 3 for the others
MANIFEST = ROOT / "artifacts" / "data" / "generated" / "manifest.parquet"
COLLAPSED = 0.05  # held-out prediction std under this: one score for every image (health.val_spread.min)


def generalisation_sets(out: Path) -> dict[str, Path]:
    """The CI-size generated benchmark's held-out photo split into the distortion types training saw and the
    rest (its held-out type included): {"seen_types": manifest, "unseen_types": manifest}."""
    from qadata.benchmark_set import ci_benchmark
    from qadata.generated import DISTORTIONS
    from qadata.manifest import read_manifest, write_manifest

    folder = out / "generalisation"
    sets = {"seen_types": folder / "seen_types.parquet", "unseen_types": folder / "unseen_types.parquet"}
    if all(path.is_file() for path in sets.values()):
        return sets
    frame = read_manifest(ci_benchmark(folder / "ci"))
    images = frame[(frame["kind"] == "image") & frame["split"].isin(["test", "unseen_type"])]
    seen = images["distortion"].isin(list(DISTORTIONS)) & (images["split"] == "test")
    columns = ["path", "mos", "dataset", "split", "kind", "distortion", "level"]
    write_manifest(images[seen][columns].assign(split="test"), sets["seen_types"])
    write_manifest(images[~seen][columns].assign(split="test"), sets["unseen_types"])
    return sets


def run(command: list[str], log: Path) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def evaluate(policy: Path, manifest: Path, folder: Path, readout: list[str]) -> dict:
    run([sys.executable, "launch/evaluate.py", "--model", str(policy), "--config", "configs/local.yaml",
         "--manifest", str(manifest), "--split", "test", *readout, "--max-new-tokens", "64", "--seed", "0",
         "--baseline", "none", "--no-tracking", "--threads", "2", "--output-dir", str(folder)],
        folder.with_suffix(".log"))
    return {**json.loads((folder / "summary.json").read_text())["results"][0], "prediction_std": spread(folder)}


def spread(folder: Path) -> float | None:
    """The std of an evaluation's item scores (`folder`/predictions.json); None when none was scored."""
    scores = [p["score"] for p in json.loads((folder / "predictions.json").read_text()) if p["score"] is not None]
    return statistics.pstdev(scores) if scores else None


def train_and_evaluate(name: str, overrides: list[str], out: Path, extra: list[str], sets: dict[str, Path]) -> dict:
    """One training run and its evaluations; the record of all (read back if already done)."""
    folder = out / name
    record_path = folder / "record.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("mean6_std") is None and (folder / "eval-mean6" / "predictions.json").is_file():
            record["mean6_std"] = spread(folder / "eval-mean6")  # a record from before the column
        return record
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    code = run([sys.executable, "launch/grpo.py", "--config", "configs/local.yaml", *overrides, *extra,
                f"run.output_dir={folder}", f"run.name=learning-{name}",
                f"tracking.uri=sqlite:///{out / 'mlflow.db'}"], folder / "train.log")
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    record = {"name": name, "exit_code": code, "train_seconds": time.time() - started,
              "rollbacks": len(summary.get("rollbacks", [])), "failure": summary.get("failure"),
              "val_history": summary.get("val_history", {}), "format_rate_last": summary.get("format_rate_last")}
    if code != 0 and not record["failure"]:
        record["failure"] = (folder / "train.log").read_text()[-600:]
    after = summary.get("val_after") or {}
    # greedy_*: the final validation's, by configs/local.yaml's eval.readout (expected since 2026-12-03)
    record.update(greedy_srcc=after.get("srcc"), greedy_plcc=after.get("plcc"),
                  scored_share=(after["scored"] / after["items"]) if after.get("items") else None)
    record.update(greedy_std=after.get("prediction_std"))
    if (folder / "policy").is_dir():
        result = evaluate(folder / "policy", MANIFEST, folder / "eval-mean6",
                          ["--samples", "6", "--temperature", "0.6"])
        record.update(mean6_srcc=result.get("srcc"), mean6_plcc=result.get("plcc"),
                      mean6_std=result.get("prediction_std"))
        for label, manifest in sets.items():
            result = evaluate(folder / "policy", manifest, folder / f"eval-{label}", ["--readout", "expected"])
            record.update({f"{label}_srcc": result.get("srcc"), f"{label}_plcc": result.get("plcc")})
    record_path.write_text(json.dumps(record, indent=2))
    return record


def mean_sd(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def collapsed(record: dict) -> bool:
    """One score for every held-out image (mean of 6), or no policy to ask."""
    return record.get("mean6_std") is None or record["mean6_std"] < COLLAPSED


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
    ax.set_ylabel("held-out SRCC (validation's readout)")
    ax.set_title("Held-out SRCC over training, one line per seed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(arms: dict[str, list[dict]], stress: list[dict], out: Path) -> str:
    lines = [f"# Learning benchmark ({date.today()}; {machine()})", "",
             "configs/local.yaml with each arm's overrides, seeds 0..n-1; held-out: the test split (160 images of "
             "4 photos never trained on). Validation SRCC: the run's final validation, by local.yaml's eval.readout "
             "(expected). Mean of 6: 6 answers per image at T = 0.6, evaluation seed 0. Collapsed: the mean-of-6 "
             f"scores' std under {COLLAPSED}.", "",
             "Generalisation (expected readout): the CI-size generated benchmark's held-out photo under the 4 global "
             "distortion types training saw (24 images), and under the types it never saw (54 images: blur, noise, "
             "JPEG, JPEG2000, quantization, pixelate).", "",
             "| arm | seeds | validation SRCC | mean-of-6 SRCC | mean-of-6 PLCC | other photo, seen types SRCC | "
             "unseen types SRCC | format rate (last 10%) | rollbacks | failed runs | collapsed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, runs in arms.items():
        lines.append(f"| {arm} | {len(runs)} | {mean_sd([r['greedy_srcc'] for r in runs])} | "
                     f"{mean_sd([r.get('mean6_srcc') for r in runs])} | "
                     f"{mean_sd([r.get('mean6_plcc') for r in runs])} | "
                     f"{mean_sd([r.get('seen_types_srcc') for r in runs])} | "
                     f"{mean_sd([r.get('unseen_types_srcc') for r in runs])} | "
                     f"{mean_sd([r['format_rate_last'] for r in runs])} | {sum(r['rollbacks'] for r in runs)} | "
                     f"{sum(r['exit_code'] != 0 for r in runs)} of {len(runs)} | "
                     f"{sum(collapsed(r) for r in runs)} of {len(runs)} |")
    lines += ["", "Per run:", "", "| run | exit | validation SRCC | mean-of-6 SRCC | mean-of-6 std | seen types | "
              "unseen types | held-out scored | rollbacks | minutes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for runs in list(arms.values()) + [stress]:
        for r in runs:
            lines.append(f"| {r['name']} | {r['exit_code']} | {fmt(r['greedy_srcc'])} | {fmt(r.get('mean6_srcc'))} | "
                         f"{fmt(r.get('mean6_std'))} | {fmt(r.get('seen_types_srcc'))} | "
                         f"{fmt(r.get('unseen_types_srcc'))} | {fmt(r['scored_share'])} | {r['rollbacks']} | "
                         f"{r['train_seconds'] / 60:.1f} |")
    for r in stress:
        if r["failure"]:
            lines += ["", f"{r['name']} stopped: {r['failure'].strip()}"]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    rows = [r for runs in list(arms.values()) + [stress] for r in runs]
    with (out / "results.csv").open("w", newline="") as f:
        keys = ["name", "exit_code", "greedy_srcc", "greedy_plcc", "mean6_srcc", "mean6_plcc", "mean6_std",
                "seen_types_srcc", "unseen_types_srcc", "scored_share", "format_rate_last", "rollbacks",
                "train_seconds"]
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if arms:
        plot(arms, out / "srcc_over_steps.png")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds of every arm (default: 0-5 for prpo and null, 0-2 for the others)")
    p.add_argument("--lr-multiples", nargs="*", type=float, default=[],
                   help="also run PRPO (first seed) at these multiples of configs/local.yaml's learner.lr")
    p.add_argument("--out", default="artifacts/learning")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run (e.g. a recipe to try)")
    p.add_argument("--report", action="store_true",
                   help="train nothing: write the report from the runs of --arms/--seeds already finished in --out")
    args = p.parse_args()
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        subprocess.run([sys.executable, "launch/prepare.py"], cwd=ROOT, check=True)
    from launch.trainer.config import load_config

    base_lr = load_config(ROOT / "configs" / "local.yaml", args.set).learner.lr
    sets = generalisation_sets(out)

    def not_to_run(name: str) -> bool:  # --report: only the runs already finished
        return args.report and not (out / name / "record.json").is_file()

    arms: dict[str, list[dict]] = {}
    for arm in args.arms:
        for seed in args.seeds if args.seeds is not None else range(SEEDS.get(arm, 3)):
            name = f"{arm}-seed{seed}"
            if not_to_run(name):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
            record = train_and_evaluate(name, [*ARMS[arm], f"run.seed={seed}"], out, args.set, sets)
            arms.setdefault(arm, []).append(record)
            print(f"  exit {record['exit_code']}, validation SRCC {fmt(record['greedy_srcc'])}, mean of 6 "
                  f"{fmt(record.get('mean6_srcc'))}, rollbacks {record['rollbacks']}", flush=True)
    stress = []
    for multiple in args.lr_multiples:
        seed = args.seeds[0] if args.seeds else 0
        name = f"prpo-lr{multiple:g}x-seed{seed}"
        if not_to_run(name):
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
        record = train_and_evaluate(name, [f"run.seed={seed}", f"learner.lr={base_lr * multiple:g}"], out, args.set,
                                    sets)
        stress.append(record)
        print(f"  exit {record['exit_code']}, held-out scored {fmt(record['scored_share'])}, rollbacks "
              f"{record['rollbacks']}", flush=True)
    print(report(arms, stress, out))


if __name__ == "__main__":
    main()
