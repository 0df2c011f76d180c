"""The rehearsal layout on one Ray node against the same job on a multi-node cluster on this machine, and what a
node's death costs.

    python benchmarks/cluster_rehearsal.py                 # about 6 min on 2 cores
    python benchmarks/cluster_rehearsal.py --steps 12

The job: configs/rehearsal.yaml (the tiny model on CPU, two ZeRO-3 learner ranks over gloo, one rollout actor, batch
8 x G 6), --steps steps, health guard off. One node: launch/grpo.py with an embedded Ray, the three bundles packed
on it (placement.strategy PACK, no declared GPUs). Cluster: launch/local_cluster.py's head and three worker nodes,
`ray job submit`, STRICT_SPREAD: the ranks' collectives and every weight sync cross nodes. Per phase: the median
over steps 3.. from each run's MLflow store.
Weight transport: Ray's object store alone, --mib MiB put by an actor on one worker node and fetched by an actor
on another node against one on the same node (median of 5).
Node loss: the job again on the cluster; every process of the rollout actor's node SIGKILLed after step 3, of
learner rank 0's after step 7, a replacement node joining each time; the time from each kill to the next step
line, and the relaunch's own seconds (summary.json). Results: --out (results.md, results.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from training_runs import step_medians, train  # beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launch.local_cluster import LocalCluster  # noqa: E402  (the repository root, added above)

MODEL = ROOT / "artifacts" / "models" / "qwen2.5-vl-tiny"
PHASES = ("step", "generate", "reward", "learn", "sync")
CONFIG = "configs/rehearsal.yaml"
# Absolute paths: a job's working directory is an upload that leaves out artifacts/.
DATA = ROOT / "artifacts" / "data" / "generated" / "manifest.parquet"
SETTINGS = [f"model.path={MODEL}", f"data.train_manifest={DATA}", "health.enabled=false", "data.eval_limit=8",
            "rollout.threads=1", "trainer.checkpoint_every=2"]


class Job:
    """`ray job submit ... -- python launch/grpo.py ARGS` to `cluster`, its output lines kept with their arrival
    time (time.monotonic())."""

    def __init__(self, cluster: LocalCluster, args: list[str], log: Path):
        command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", cluster.dashboard,
                   "--working-dir", ".", "--", "python", "launch/grpo.py", "--config", CONFIG, *args]
        self.log = log
        self.process = subprocess.Popen(command, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self.log.open("w") as out:
            for line in self.process.stdout:
                self.lines.append((time.monotonic(), line))
                out.write(line)

    def wait_for(self, pattern: str, after: float = 0.0) -> tuple[float, str]:
        """The first line matching `pattern` that arrived after `after`."""
        while True:
            for at, line in list(self.lines):
                if at > after and re.search(pattern, line):
                    return at, line
            if self.process.poll() is not None:
                time.sleep(1)  # the reader's last lines
                for at, line in list(self.lines):
                    if at > after and re.search(pattern, line):
                        return at, line
                raise SystemExit(f"the job ended without a line matching {pattern!r}; see {self.log}")
            time.sleep(0.05)

    def finish(self) -> None:
        if self.process.wait() != 0:
            raise SystemExit(f"the job failed; see {self.log}")


def run_args(steps: int) -> list[str]:
    return [*SETTINGS, f"trainer.steps={steps}", f"trainer.eval_every={steps}"]


def submitted(cluster: LocalCluster, out: Path, steps: int, log: Path) -> Job:
    """The job submitted (retried while the head's job agent is not up yet)."""
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(12):
        job = Job(cluster, [*run_args(steps), f"run.output_dir={out}", "run.resume=false",
                            f"tracking.uri=sqlite:///{out / 'mlflow.db'}"], log)
        while job.process.poll() is None and not any("submitted successfully" in line for _, line in job.lines):
            time.sleep(0.2)
        if job.process.poll() is not None:
            time.sleep(1)  # the reader's last lines
        if not any("No available agent" in line for _, line in job.lines):
            return job
        job.process.wait()
        time.sleep(10)
    raise SystemExit(f"the cluster's job agent never came up; see {log}")


def summary_of(out: Path) -> dict:
    return {**json.loads((out / "summary.json").read_text()), "tracking_uri": f"sqlite:///{out / 'mlflow.db'}"}


def weight_bytes(model: Path) -> int:
    """The float32 weights one sync moves (rehearsal.yaml's model.dtype)."""
    from safetensors import safe_open

    total = 0
    for shard in model.glob("*.safetensors"):
        with safe_open(str(shard), "np") as f:
            total += sum(4 * math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


def transport(cluster: LocalCluster, mib: int) -> dict:
    """Seconds to fetch `mib` MiB from an object on worker node 1 by an actor on node 2, and on node 1 itself."""
    import numpy as np
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    class Holder:
        def make(self, n: int) -> list:
            return [ray.put(np.ones(n, dtype=np.uint8))]

        def fetch(self, refs: list) -> float:
            began = time.perf_counter()
            array = ray.get(refs[0])
            took = time.perf_counter() - began
            assert array.nbytes > 0
            return took

    with cluster.authenticated():
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        try:
            nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
            on = [Holder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
                  for node in nodes[:2]]
            same = Holder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[0], soft=False)).remote()
            seconds: dict[str, list[float]] = {"across": [], "within": []}
            for _ in range(5):
                for kind, reader in (("across", on[1]), ("within", same)):
                    refs = ray.get(on[0].make.remote(mib * 2**20))
                    seconds[kind].append(ray.get(reader.fetch.remote(refs)))
                    del refs
        finally:
            ray.shutdown()
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    return {"mib": mib, **{f"{k}_s": v for k, v in medians.items()},
            **{f"{k}_mib_per_s": mib / v for k, v in medians.items()}}


def node_loss(cluster: LocalCluster, out: Path, steps: int) -> dict:
    job = submitted(cluster, out, steps, out.parent / "node-loss.log")
    _, line = job.wait_for(r"^roles' nodes:")
    *learners, rollout, _ = re.findall(r"([0-9a-f]{12})", line)
    step_line = r"^step {}/\d+ "
    job.wait_for(step_line.format(3))
    killed = time.monotonic()
    cluster.kill_node(rollout)
    cluster.add_worker()
    rollout_back, _ = job.wait_for(step_line.format(r"\d+"), after=killed)
    job.wait_for(step_line.format(7))
    killed_learner = time.monotonic()
    cluster.kill_node(learners[0])
    cluster.add_worker()
    relaunched, _ = job.wait_for(r"^learner group relaunched", after=killed_learner)
    going_on, _ = job.wait_for(step_line.format(r"\d+"), after=relaunched)
    job.finish()
    summary = summary_of(out)
    [relaunch] = summary["relaunches"]
    return {"rollout_node_to_next_step_s": rollout_back - killed,
            "learner_node_to_relaunched_s": relaunched - killed_learner,
            "learner_node_to_next_step_s": going_on - killed_learner,
            "relaunch_own_s": relaunch["seconds"], "relaunch_from_step": relaunch["to_step"],
            "relaunch_after_step": relaunch["step"], "rollout_restarts": summary["rollout_restarts"],
            "status": summary["status"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--mib", type=int, default=64, help="object size for the transport figure")
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "cluster_rehearsal"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (MODEL / "config.json").is_file():
        raise SystemExit(f"{MODEL} is missing: run `make prepare` first")
    keys = tuple(f"time/{p}" for p in PHASES)

    print("one node ...", flush=True)
    one = train([*run_args(args.steps), "placement.strategy=PACK", "placement.declared_gpus=false"],
                out / "one-node", out / "one-node.log", config=CONFIG)
    results = {"one_node": step_medians(one, keys, 3)}
    print("cluster ...", flush=True)
    cluster = LocalCluster(workers=3, gpus=1, cpus=1, dashboard_port=8297, store_bytes=512 * 2**20)
    try:
        job = submitted(cluster, out / "cluster", args.steps, out / "cluster.log")
        job.finish()
        results["cluster"] = step_medians(summary_of(out / "cluster"), keys, 3)
        results["nodes"] = summary_of(out / "cluster")["nodes"]
        print("object transport ...", flush=True)
        results["transport"] = transport(cluster, args.mib)
        print("node loss ...", flush=True)
        results["node_loss"] = node_loss(cluster, out / "node-loss", args.steps)
    finally:
        cluster.stop()
    size = weight_bytes(MODEL)
    for where in ("one_node", "cluster"):
        results[where]["sync_mib_per_s"] = size / 2**20 / results[where]["time/sync"]
    results.update(weight_bytes=size, steps=args.steps, machine=f"{platform.machine()}, "
                   f"{os.cpu_count()} cores, {platform.python_version()}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report = render(results)
    (out / "results.md").write_text(report)
    print(report)


def render(r: dict) -> str:
    rows = ["| | " + " | ".join(f"{p} s" for p in PHASES) + " | sync MiB/s |", "|---" * (len(PHASES) + 2) + "|"]
    for where, label in (("one_node", "one node"), ("cluster", "4-node cluster (STRICT_SPREAD)")):
        m = r[where]
        rows.append(f"| {label} | " + " | ".join(f"{m[f'time/{p}']:.3f}" for p in PHASES)
                    + f" | {m['sync_mib_per_s']:.0f} |")
    t, loss = r["transport"], r["node_loss"]
    return "\n".join([
        f"Rehearsal job, {r['steps']} steps, medians from step 3; a sync moves {r['weight_bytes'] / 2**20:.1f} MiB "
        f"(float32). Machine: {r['machine']}.", "", *rows, "",
        f"Object store alone, {t['mib']} MiB: across nodes {t['across_s']:.3f} s ({t['across_mib_per_s']:.0f} MiB/s), "
        f"within one node {t['within_s']:.3f} s ({t['within_mib_per_s']:.0f} MiB/s): ratio "
        f"{t['across_s'] / t['within_s']:.2f}x.", "",
        f"Node loss: rollout node killed -> next step line {loss['rollout_node_to_next_step_s']:.1f} s "
        f"({loss['rollout_restarts']} restart); learner node killed -> group relaunched "
        f"{loss['learner_node_to_relaunched_s']:.1f} s (the relaunch itself {loss['relaunch_own_s']:.1f} s, from "
        f"step {loss['relaunch_from_step']} after step {loss['relaunch_after_step']}) -> next step line "
        f"{loss['learner_node_to_next_step_s']:.1f} s; the run {loss['status']}.", ""])


if __name__ == "__main__":
    main()
