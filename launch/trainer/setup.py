"""Everything before the first step: inputs checked, Ray and the roles started, MLflow opened, a checkpoint
resumed, the starting point validated."""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import ray
import torch

from actors.notices import silence_known_notices
from actors.ray_connection import connect_ray
from launch.environment_record import environment_record, write_record
from launch.trainer.checkpoint import CheckpointStore
from launch.trainer.config import ConfigError, flatten, load_config
from launch.trainer.health import HealthGuard
from launch.trainer.metrics import Timer
from launch.trainer.roles import role_nodes, start_roles
from launch.trainer.run_record import RunRecord
from launch.trainer.run_state import resume_state
from launch.trainer.sample_tables import SampleTables, TableLimits
from launch.trainer.tracking import Tracker
from launch.trainer.training_run import TrainingRun
from models.processor import require_model_folder
from qadata.manifest import ManifestError
from qadata.requests import RunData


def read_inputs(argv: list[str] | None, description: str):
    """The validated config and the run's data; a bad config, path or manifest ends the run (SystemExit)
    before any actor starts."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML overriding configs/base.yaml")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.steps=20")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if (cfg.ray.address or os.environ.get("RAY_ADDRESS")) and not Path(cfg.run.output_dir).is_absolute():
            raise ConfigError(f"config key 'run.output_dir' is {cfg.run.output_dir!r}, a relative path, and this run "
                              "joins a Ray cluster, where each node would resolve it in a working folder of its own: "
                              "give an absolute path on a volume every node mounts at the same place")
        require_model_folder(cfg.model.path)
        for path in (cfg.data.train_manifest, cfg.data.eval_manifest):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"manifest not found: {path}")
        return cfg, RunData(cfg)
    except (ConfigError, FileNotFoundError, ManifestError) as error:
        raise SystemExit(f"preresq: {error}") from None


def claim_output_dir(folder: Path):
    """An exclusive lock on `folder` for this controller's life (the returned handle): a second controller there
    would sweep the first one's half-written checkpoints and prune its folders. SystemExit names the holder."""
    handle = open(folder / ".controller.lock", "a+")  # held open until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SystemExit(f"preresq: {folder} is in use by another controller ({holder}): two runs in one "
                         "run.output_dir would delete each other's checkpoints. Use another run.output_dir, or stop "
                         "the other run first (a rerun of a stopped run resumes it).") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle


def init_ray(cfg) -> None:
    needed = cfg.rollout.num_actors + cfg.learner.num_ranks * cfg.learner.cpus_per_rank
    connect_ray(cfg.ray.address, cfg.ray.num_cpus or max(os.cpu_count() or 1, math.ceil(needed)))


def start_run(cfg, data: RunData) -> TrainingRun:
    """Ray, the roles and MLflow started; the newest checkpoint resumed when there is one (run.resume)."""
    silence_known_notices()
    torch.manual_seed(cfg.run.seed)
    output_dir = Path(cfg.run.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = claim_output_dir(output_dir)
    checkpoints = CheckpointStore(output_dir / "checkpoints", cfg.trainer.keep_checkpoints)
    snapshots = CheckpointStore(output_dir / "healthy", cfg.health.keep_snapshots, "healthy snapshot")
    resume_from, state = resume_state(cfg, checkpoints)
    startup = Timer()
    with ThreadPoolExecutor(1) as pool:
        # MLflow's set-up (a new store's schema migrations: seconds) overlaps Ray's start and the actors' loading.
        tracker_ready = pool.submit(
            Tracker, cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment, cfg.run.name, flatten(cfg),
            cfg.tracking.queue_metrics, cfg.tracking.timeout_s, run_id=state["mlflow_run_id"] if state else None,
            unsent_path=output_dir / "mlflow-unsent.jsonl")
        with startup.phase("startup/ray"):
            init_ray(cfg)
        with startup.phase("startup/roles"):
            roles = start_roles(cfg)
            roles.learners.see(output_dir.resolve())  # where the ranks write checkpoints, the controller reads
        with startup.phase("startup/tracking_wait"):
            tracker = tracker_ready.result()
    record = write_record(environment_record(flatten(cfg), cfg.model.path), output_dir)
    tracker.log_artifact(str(record))
    if roles.placement:
        print(f"placement group ({roles.placement['mode']}, {roles.placement['strategy']}): bundles "
              f"{roles.placement['bundles']}, rollouts in {roles.placement['rollout_bundles']}, learner ranks in "
              f"{roles.placement['learner_bundles']}", flush=True)
    nodes = role_nodes(roles)
    if len({*nodes["learners"], *nodes["rollouts"], nodes["reward"]}) > 1:
        print(f"roles' nodes: learner ranks {[n[:12] for n in nodes['learners']]}, rollout actors "
              f"{[n[:12] for n in nodes['rollouts']]}, reward actor {nodes['reward'][:12]}", flush=True)
    for node in crowded_nodes(cfg, nodes):
        print(f"warning: trainer.max_staleness {cfg.trainer.max_staleness} runs generation and learning at once, "
              f"and {node}: each role slows the other (benchmarks/async_overlap.py); make rollout.threads plus "
              "learner.threads at most the node's CPUs", flush=True)
    run = TrainingRun(cfg, data, roles, tracker, checkpoints, snapshots,
                      data.sampler(cfg.run.seed),
                      HealthGuard(cfg.health), RunRecord(), 0,
                      startup.seconds, lock=lock, samples=sample_tables(cfg, tracker, data))
    if state:
        resume(run, resume_from, state)
    run.stop.install()
    return run


def crowded_nodes(cfg, nodes: dict) -> list[str]:
    """With a batch sampled ahead: the nodes whose CPU roles' torch threads (rollout.threads a rollout actor,
    learner.threads a rank) add up to more than the node's CPUs, said as "node <id> asks ..."."""
    if not cfg.trainer.max_staleness:
        return []
    cpus = {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]}
    here = ray.get_runtime_context().get_node_id()  # embedded Ray may declare more CPUs than the machine has
    cpus[here] = min(cpus.get(here, 0.0), float(os.cpu_count() or 1))
    asked = Counter()
    for role, section in (("rollouts", cfg.rollout), ("learners", cfg.learner)):
        if section.device == "cpu":
            for node in nodes[role]:
                asked[node] += section.threads
    return [f"node {node[:12]} asks {threads} torch threads of its {cpus[node]:g} CPUs"
            for node, threads in asked.items() if node in cpus and threads > cpus[node]]


def sample_tables(cfg, tracker, data: RunData) -> SampleTables:
    t = cfg.tracking
    return SampleTables(Path(cfg.run.output_dir) / "samples", tracker,
                        TableLimits(t.sample_items, t.sample_answers, t.thumbnail_px), t.samples_every, data.eval)


def resume(run: TrainingRun, folder: Path, state: dict) -> None:
    """The learner, the sampler, the RNG, the record and the skipped media as the checkpoint in `folder` left
    them; the rollout actors given the learner's weights."""
    run.restore(folder, state)
    run.start_step = run.step
    logged_until = run.tracker.logged_until
    print(f"resumed from {folder} at step {run.start_step}"
          + (f"; steps {run.start_step + 1}-{logged_until} were logged before the crash and are replayed "
             "without logging them again" if logged_until > run.start_step else ""), flush=True)


def ready_for_first_step(run: TrainingRun) -> None:
    """The starting point validated and snapshotted (unless a resumed run has them), start-up time reported. (A
    resumed run's validation that a stop cut short is redone, and judged, by the loop.)"""
    timer = Timer()
    with timer.phase("startup/validation"):
        if run.start_step == 0 and 0 not in run.record.evals:
            run.validate(0)
            for why in run.guard.unarmed_validation_signals(run.record.evals).values():
                print(f"warning: {why}", flush=True)
    with timer.phase("startup/snapshot"):
        if run.cfg.health.enabled:
            run.snapshots.drop_after(run.start_step)  # from a trajectory that a crash cut short
            if run.start_step not in run.snapshots.steps():
                run.save(run.snapshots, run.start_step)
    # From the process's start: the imports, the config and the data are what the named phases leave over.
    total = time.time() - psutil.Process().create_time()
    phases = {**run.startup_seconds, **timer.seconds}
    seconds = {"time/startup/imports_config_data": total - sum(phases.values()), **phases,
               "time/startup/total": total}
    run.tracker.log_metrics(seconds, run.start_step)
    parts = ", ".join(f"{k.rsplit('/', 1)[-1].replace('_', ' ')} {v:.1f}" for k, v in seconds.items()
                      if not k.endswith("total"))
    print(f"ready for step {run.start_step + 1} in {total:.1f} s ({parts})", flush=True)
    run.steps_began = time.time()
