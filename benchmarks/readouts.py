"""Three ways to read a score, side by side on one model: greedy, the mean of 6 samples, expected (eval.readout).

    python benchmarks/readouts.py                      # make train's policy, the held-out split (~4 min on 2 cores)
    python benchmarks/readouts.py --model PATH --manifest M.parquet --split test

Each readout is one `launch/evaluate.py` run on the same items, actors and seed. Prints and writes to --out:
readouts.md (SRCC, PLCC, MAE, scored share, distinct scores, seconds per item, each readout's time as a ratio of
greedy's) and readouts.png (calibration: mean prediction per MOS bin against MOS, the diagonal is perfect).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
READOUTS = {"greedy": ["--readout", "greedy"], "mean of 6": ["--readout", "mean", "--samples", "6"],
            "expected": ["--readout", "expected"]}


def evaluate(name: str, flags: list[str], args) -> dict:
    out = Path(args.work) / name.replace(" ", "-")
    command = [sys.executable, str(ROOT / "launch" / "evaluate.py"), "--model", args.model, "--config",
               str(ROOT / "configs" / "local.yaml"), "--manifest", args.manifest, "--split", args.split,
               "--baseline", "none", "--no-tracking", "--output-dir", str(out), "--seed", "0", *flags]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    records = json.loads((out / "predictions.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    row = summary["results"][0]
    scored = [(r["score"], r["mos"]) for r in records if r["score"] is not None]
    return {"name": name, "srcc": row["srcc"], "plcc": row["plcc"], "mae": row["mae"], "items": len(records),
            "scored": len(scored), "distinct": len({round(s, 4) for s, _ in scored}),
            "scoring_s": summary["seconds"], "command_s": seconds, "pairs": scored}


def calibration_plot(results: list[dict], path: Path) -> None:
    figure = Figure(figsize=(5.5, 5))
    ax = figure.subplots()
    ax.plot([1, 5], [1, 5], color="grey", linestyle=":", label="perfect")
    for r in results:
        pred, mos = (np.array(v) for v in zip(*r["pairs"]))
        edges = np.quantile(mos, np.linspace(0, 1, 9))
        bins = np.clip(np.digitize(mos, edges[1:-1]), 0, 7)
        centres = [mos[bins == b].mean() for b in range(8) if (bins == b).any()]
        means = [pred[bins == b].mean() for b in range(8) if (bins == b).any()]
        ax.plot(centres, means, marker="o", label=f"{r['name']} (MAE {r['mae']:.2f})")
    ax.set_xlabel("MOS (mean per eighth of the items)")
    ax.set_ylabel("predicted score, mean per bin")
    ax.set_title("Calibration of three readouts")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "artifacts" / "run" / "policy"))
    p.add_argument("--manifest", default=str(ROOT / "artifacts" / "data" / "generated" / "manifest.parquet"))
    p.add_argument("--split", default="test")
    p.add_argument("--work", default=str(ROOT / "artifacts" / "bench" / "readouts"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    results = [evaluate(name, flags, args) for name, flags in READOUTS.items()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    calibration_plot(results, out / "readouts.png")
    base = results[0]["scoring_s"]
    lines = [f"# Readouts on one model ({date.today()}, {platform.machine()}, {os.cpu_count()} CPUs)", "",
             f"Model {Path(args.model).name}, {args.split} split of {Path(args.manifest).name}, configs/local.yaml "
             "settings, seed 0. Seconds: the scoring (actors started, items answered); ratio against greedy.", "",
             "| readout | SRCC | PLCC | MAE | scored | distinct scores | s / item | time vs greedy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['srcc']:.3f} | {r['plcc']:.3f} | {r['mae']:.3f} | {r['scored']}/{r['items']} "
                     f"| {r['distinct']} | {r['scoring_s'] / r['items']:.3f} | {r['scoring_s'] / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    (out / "readouts.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
