"""A run's state beside the learner's: what a checkpoint holds for the steps after it, and resuming it."""

from __future__ import annotations

from pathlib import Path

import torch

from launch.trainer import checkpoint
from launch.trainer.checkpoint import CheckpointError, CheckpointStore
from launch.trainer.config import flatten

# Keys that cannot change what a run computes: a resume may change them without being asked.
# The validations are not among them: the health guard judges each one, and a breach rolls the run back.
RESULT_NEUTRAL = ("run.name", "run.resume", "run.allow_config_change", "run.output_dir", "tracking.", "ray.",
                  "trainer.log_every", "trainer.checkpoint_every",
                  "trainer.keep_checkpoints", "trainer.checkpoint_every_s", "trainer.verify_sync",
                  "placement.timeout_s", "run.stop_grace_s", "run.max_relaunches", "rollout.vllm.transfer_buffer_bytes")


def result_config(cfg) -> dict:
    """The flattened config minus the keys that do not change the result (timeouts, restarts, logging)."""
    return {k: v for k, v in flatten(cfg).items()
            if not k.startswith(RESULT_NEUTRAL) and not k.endswith(("timeout_s", "max_restarts"))}


def config_changes(saved: dict, now: dict) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}" for k in keys
            if saved.get(k, "(absent)") != now.get(k, "(absent)")]


def trainer_state(run, step: int) -> dict:
    """Everything besides the learner's DeepSpeed state that the steps after `step` of `run` (a TrainingRun)
    depend on."""
    return {
        "step": step,
        "stage": run.stage(step).number,
        "sampler": run.sampler.state(),
        "rng": {"torch": torch.get_rng_state().tolist(), "seed": run.cfg.run.seed},
        "mlflow_run_id": run.tracker.run_id,
        "history": run.record.to_state(),
        "health_window": run.guard.state(),
        "skipped_media": run.data.skipped,
        "ahead": run.ahead.state() if run.ahead is not None else None,  # trainer.max_staleness: step + 1's answers
        "config": result_config(run.cfg),
    }


def sampling_seed(seed: int, step: int, rollbacks: int, round_: int = 0) -> int:
    """Each step's sampling seed; a rollback moves it on, so a redone step draws other answers; a dynamic-sampling
    round after the first (`round_`) has its own."""
    return seed * 100003 + step + 1_000_003 * rollbacks + 10_000_019 * round_


def resume_state(cfg, checkpoints: CheckpointStore) -> tuple[Path | None, dict | None]:
    """The newest verified checkpoint and its state, or (None, None); refused (SystemExit) when the
    checkpoint is not what was committed, or when the config changed in a key that changes the result."""
    if not cfg.run.resume:
        return None, None
    try:
        folder = checkpoints.latest()
    except CheckpointError as error:
        raise SystemExit(f"preresq: cannot resume: {error}") from None
    if folder is None:
        return None, None
    state = checkpoint.read_state(folder)
    changes = config_changes(state.get("config", {}), result_config(cfg))
    if changes and not cfg.run.allow_config_change:
        raise SystemExit(
            f"preresq: {folder} was written with another config, and resuming it with this one would not give the "
            f"run it started: {'; '.join(changes[:8])}{' ...' if len(changes) > 8 else ''}. Use another "
            "run.output_dir for a new run, or pass run.allow_config_change=true to resume anyway.")
    return folder, state
