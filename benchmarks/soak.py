"""Soak: a long local run (make train's job, 500 steps by default) sampled from outside for memory growth.

    python benchmarks/soak.py                      # ~12 min on 2 cores
    python benchmarks/soak.py --steps 1000 --interval 10

Every `interval` seconds it records the resident memory (RSS) of the driver and of each Ray process of the
run (rollout, reward, learner actors, raylet, GCS), and the Ray object store's use (a second driver, let in
with the run's token), next to the step the run is at. After warm-up (the first `--warmup` steps) it fits a
line through each series: growth in MiB per 100 steps, and first-to-last. Results: soak.csv, soak.md and
soak.png under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("RolloutWorker", "RewardWorker", "LearnerRank")
STEP = re.compile(r"^step (\d+)/")


def role_of(process: psutil.Process) -> str | None:
    words = " ".join(process.cmdline())
    for role in ROLES:
        if f"ray::{role}" in words:
            return role
    if "raylet" in words.split(" ")[0]:
        return "raylet"
    if "gcs_server" in words.split(" ")[0]:
        return "gcs_server"
    return None


def object_store_mib(address: str) -> float | None:
    """The run's object store in use, asked as a second driver (RAY_AUTH_TOKEN set to the run's token)."""
    import ray
    from ray._private.internal_api import memory_summary

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    text = memory_summary(address, stats_only=True)
    match = re.search(r"Plasma memory usage (\d+) MiB", text)
    return float(match[1]) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=50, help="steps left out of the growth fit")
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "soak"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--report-only", action="store_true", help="redo the table and plot from soak.csv")
    args = parser.parse_args()
    out, results = Path(args.out), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        import pandas as pd

        return report(pd.read_csv(results / "soak.csv").to_dict("records"), args, results)
    command = [sys.executable, "launch/grpo.py", "--config", "configs/local.yaml", f"trainer.steps={args.steps}",
               f"run.output_dir={out / 'run'}", "run.name=preresq-soak", f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
               "run.resume=false"]
    out.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    state = {"step": 0, "address": None}
    log = (out / "soak.log").open("w")

    def read() -> None:
        for line in process.stdout:
            log.write(line)
            if line.startswith("local Ray at "):
                state["address"] = line.split()[3].rstrip(",")
            match = STEP.match(line)
            if match:
                state["step"] = int(match[1])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    samples, connected, started = [], False, time.monotonic()
    driver = psutil.Process(process.pid)
    while process.poll() is None:
        time.sleep(args.interval)
        if state["step"] < 1:
            continue
        if state["step"] >= args.steps:  # leave before the run's Ray goes down (a driver would die with it)
            if connected:
                import ray

                ray.shutdown()
            process.wait()
            break
        try:
            tree = [driver, *driver.children(recursive=True)]
            row = {"seconds": time.monotonic() - started, "step": state["step"], "driver": driver.memory_info().rss}
            for child in tree[1:]:
                role = role_of(child)
                if role:
                    row[role] = row.get(role, 0) + child.memory_info().rss
                    if role == "RolloutWorker" and not connected:
                        os.environ["RAY_AUTH_MODE"] = "token"
                        os.environ["RAY_AUTH_TOKEN"] = child.environ()["RAY_AUTH_TOKEN"]
                        connected = True
            if connected and state["address"]:
                row["object_store"] = object_store_mib(state["address"]) * 2**20
        except (psutil.Error, KeyError, RuntimeError, ConnectionError) as error:
            print(f"sample skipped: {type(error).__name__}: {str(error)[:120]}", flush=True)
            continue
        samples.append(row)
        print(f"step {row['step']:4d}: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in row.items()
                                                     if k not in ("seconds", "step")), flush=True)
    reader.join(timeout=10)
    log.close()
    if process.returncode != 0:
        raise SystemExit(f"the soak run failed (exit {process.returncode}); see {out / 'soak.log'}")
    report(samples, args, results)


def report(samples: list[dict], args, results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(samples).fillna(0)
    frame.to_csv(results / "soak.csv", index=False)
    series = [c for c in frame.columns if c not in ("seconds", "step")]
    late = frame[frame["step"] >= args.warmup]
    last = int(frame["step"].max())
    early_span = (args.warmup, args.warmup + 100)
    early = late[late["step"] < early_span[1]]
    final = late[late["step"] > last - 100]
    # Medians over 100-step spans, since the learner's RSS swings by ~200 MiB within a step (allocator).
    lines = [f"Soak: {last} steps of make train's job, sampled every {args.interval:g} s ({len(frame)} samples; "
             f"warm-up: the first {args.warmup} steps).", "",
             f"| process | median MiB, steps {early_span[0]}-{early_span[1]} | median MiB, steps {last - 100}-{last} "
             "| change | fitted growth (MiB / 100 steps) |", "|---|---|---|---|---|"]
    for name in series:
        values = late[name] / 2**20
        slope = np.polyfit(late["step"], values, 1)[0] * 100 if len(late) > 2 else float("nan")
        first, end = early[name].median() / 2**20, final[name].median() / 2**20
        lines.append(f"| {name} | {first:.0f} | {end:.0f} | {end - first:+.1f} | {slope:+.2f} |")
    (results / "soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name in series:
        axis.plot(frame["step"], frame[name] / 2**20, label=name)
    axis.axvline(args.warmup, color="grey", linestyle=":", label="end of warm-up")
    axis.set_xlabel("step")
    axis.set_ylabel("MiB (RSS; object store: used)")
    axis.set_title(f"preresq soak: {args.steps} local steps")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(results / "soak.png", dpi=120)


if __name__ == "__main__":
    main()
