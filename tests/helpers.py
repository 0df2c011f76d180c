"""Running project commands from tests as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS` from the repository root, as a user runs it (a local Ray gets a token of its own)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


# The defaults of configs/base.yaml as the objects that code under test takes, so that no test restates them.

def base_config(*overrides: str, config_file: str | None = None):
    from launch.trainer.config import load_config

    return load_config(config_file, list(overrides))


def loss_options(**changes) -> dict:
    """grpo_loss's keyword options from base.yaml's `algorithm:` section, with `changes`."""
    a = base_config().algorithm
    return {"clip_low": a.clip_low, "clip_high": a.clip_high, "kl_coef": a.kl_coef, "kl_estimator": a.kl_estimator,
            "aggregation": a.loss_aggregation, **changes}


def sampling(**changes):
    """SamplingSettings of a training step under base.yaml (seed 0), with `changes`."""
    from dataclasses import replace

    from rollouts.backend import SamplingSettings

    return replace(SamplingSettings.training(base_config().rollout, 0), **changes)


def video_settings(**changes):
    from qadata.video import VideoSettings

    return VideoSettings(**{**base_config().video, **changes})


def reward_section(**changes):
    """base.yaml's `reward:` section (typed), with `changes`."""
    from dataclasses import replace

    from launch.trainer.config import typed

    return replace(typed(base_config().reward), **changes)


def local_config(model_path, *overrides: str):
    """configs/local.yaml (float32, CPU, ZeRO-2 over gloo, one rank) on `model_path`, one thread per role."""
    return base_config(f"model.path={model_path}", "rollout.threads=1", "learner.threads=1", *overrides,
                       config_file=str(ROOT / "configs" / "local.yaml"))


def rollout_worker(model_path, *overrides: str):
    """A RolloutWorker in this process, as the actors are built from a run's config."""
    from actors.rollout import RolloutWorker
    from launch.trainer.config import typed

    cfg = local_config(model_path, *overrides)
    return RolloutWorker(typed(cfg.model), typed(cfg.rollout), cfg.run.seed)
