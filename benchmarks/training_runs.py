"""Running make train's job from a benchmark and reading its per-step metrics back (shared by the speed scripts)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train(overrides: list[str], output_dir: Path, log: Path, env: dict | None = None,
          config: str = "configs/local.yaml") -> dict:
    """`launch/grpo.py --config CONFIG` (make train's by default) with `overrides`, writing to output_dir (its MLflow
    store there too): its summary.json, with `tracking_uri` added. Exits naming the log when the run fails."""
    output_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{output_dir / 'mlflow.db'}"
    command = [sys.executable, "launch/grpo.py", "--config", config, *overrides,
               f"run.output_dir={output_dir}", "run.resume=false",
               *([] if any(o.startswith("tracking.uri=") for o in overrides) else [f"tracking.uri={uri}"])]
    with log.open("w") as out:
        code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}).returncode
    if code != 0:
        raise SystemExit(f"training run failed (exit {code}); see {log}")
    return {**json.loads((output_dir / "summary.json").read_text()), "tracking_uri": uri}


def step_medians(run: dict, keys: tuple[str, ...], from_step: int) -> dict[str, float]:
    """The median of each metric over the steps from `from_step` on, of a run `train` returned."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(run["tracking_uri"])
    return {key: statistics.median(m.value for m in client.get_metric_history(run["mlflow_run_id"], key)
                                   if m.step >= from_step) for key in keys}
