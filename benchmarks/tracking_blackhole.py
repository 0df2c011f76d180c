"""A blackholed MLflow server against no tracking at all: make train's job side by side, one run each.

    python benchmarks/tracking_blackhole.py             # about 3 min on 2 cores
    python benchmarks/tracking_blackhole.py --steps 60

The blackhole is a local socket that accepts connections and never answers (a server behind a dead load
balancer): the MLflow sender thread waits on it for the whole run, while the loop only queues. The ratio of the
median step times (steps 3..) and of the whole commands; results: --out (results.md, results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
from pathlib import Path

from training_runs import ROOT, train  # beside this script


def step_times(out: Path) -> list[float]:
    """time/step of each step, from the run's console lines (the blackholed run has no MLflow store to read)."""
    return [float(line.split()[-3].rstrip("s")) for line in (out.parent / f"{out.name}.log").read_text().splitlines()
            if line.startswith("step ") and "/" in line.split()[1] and " eta " in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "tracking_blackhole"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"trainer.steps={args.steps}", f"trainer.eval_every={args.steps}", "data.eval_limit=16",
              "health.enabled=false", "trainer.verify_sync=false"]
    results = {}
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(256)
        port = blackhole.getsockname()[1]
        for name, extra in (("untracked", ["tracking.enabled=false"]),
                            ("blackholed", [f"tracking.uri=http://127.0.0.1:{port}", "tracking.timeout_s=5"])):
            print(f"{name} ...", flush=True)
            summary = train([*common, *extra], out / name, out / f"{name}.log")
            times = step_times(out / name)[2:]
            results[name] = {"median_step_s": statistics.median(times), "command_s": summary["seconds"]}
    ratio = results["blackholed"]["median_step_s"] / results["untracked"]["median_step_s"]
    results.update(step_ratio=ratio, steps=args.steps,
                   machine=f"{platform.machine()}, {os.cpu_count()} cores")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report = (f"make train's job, {args.steps} steps, median step from step 3: untracked "
              f"{results['untracked']['median_step_s']:.3f} s, MLflow blackholed "
              f"{results['blackholed']['median_step_s']:.3f} s: ratio {ratio:.2f}x (whole run "
              f"{results['untracked']['command_s']:.0f} s vs {results['blackholed']['command_s']:.0f} s). "
              f"Machine: {results['machine']}.\n")
    (out / "results.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
