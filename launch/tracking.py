"""MLflow tracking: params once, each step's metrics in one batch call, artifacts at the end.

Default store: MLFLOW_TRACKING_URI, else a local SQLite file `mlflow.db` in the working directory.
"""

from __future__ import annotations

import math
import os
import time


def tracking_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class Tracker:
    def __init__(self, enabled: bool, uri: str | None, experiment: str, run_name: str,
                 params: dict, run_id: str | None = None):
        self.enabled = enabled
        self.run_id = None
        if not enabled:
            return
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(uri)
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        if run_id is None:
            run = self.client.create_run(experiment_id, run_name=run_name)
            self.run_id = run.info.run_id
            self.log_params(params)
        else:
            self.run_id = run_id  # a resumed run goes on logging into the same MLflow run
            self.client.update_run(run_id, status="RUNNING")

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        for start in range(0, len(batch), 900):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 900])

    def log_artifact(self, path: str) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.client.set_terminated(self.run_id, status=status)
