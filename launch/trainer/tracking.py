"""MLflow tracking: params once, each step's metrics in one batch call, artifacts at the end.

Default store: MLFLOW_TRACKING_URI, else a local SQLite file `mlflow.db` in the working directory.

A run outlives its tracking server: a failed call is buffered, warned about once, and retried with the next
one (and at the end); what never got through is written to `<output_dir>/mlflow-unsent.jsonl`. A resumed
run logs into the same MLflow run and does not log again the steps it logged before the crash (it replays
them, and says whether the replay gave the same reward). No secret reaches MLflow: credentials in URIs are
masked and keys that look like secrets are dropped from the params.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path

SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|credential|auth)", re.IGNORECASE)
URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]*)(:(?P<password>[^/@\s]*))?@",
                             re.IGNORECASE)
RETRY_S = 30.0  # between tries while the tracking server is unreachable
# The metric logged every step, whose history says which steps a crashed run already logged.
STEP_METRIC = "reward/total"


def tracking_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def mask_credentials(text: str) -> str:
    """'https://alice:pw@host' -> 'https://alice:***@host'; a token as the user part is masked too."""
    def mask(match: re.Match) -> str:
        if match["password"] is not None:
            return f"{match['scheme']}{match['user']}:***@"
        return f"{match['scheme']}***@" if match["user"] else match[0]

    return URI_CREDENTIALS.sub(mask, text)


def public_params(params: dict) -> dict:
    """The params that may be stored: no key that looks like a secret, no credential inside a value."""
    return {k: mask_credentials(str(v)) for k, v in params.items() if not SECRET_KEY.search(k.rsplit(".", 1)[-1])}


class Tracker:
    def __init__(self, enabled: bool, uri: str | None, experiment: str, run_name: str,
                 params: dict, run_id: str | None = None, unsent_path: str | Path | None = None):
        self.enabled = enabled
        self.run_id = None
        self.pending: list = []  # metrics not yet accepted by the server
        self.failing = False
        self.retry_at = 0.0  # during an outage, the next try (monotonic seconds): the loop is not held up
        self.logged: dict[int, float] = {}  # a resumed run's STEP_METRIC as logged before the crash
        self.logged_until = -1
        self.replay_mismatch: list[int] = []
        self.unsent_path = Path(unsent_path) if unsent_path else None
        if not enabled:
            return
        # An unreachable server costs seconds, not MLflow's default minutes of retries, per try.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        import mlflow
        from mlflow.tracking import MlflowClient

        # A new SQLite store announces its schema set-up at INFO; the run's own lines say where the store is.
        for name in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)

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
            self.logged = {m.step: m.value for m in self.client.get_metric_history(run_id, STEP_METRIC)}
            self.logged_until = max(self.logged, default=-1)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in public_params(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        if step <= self.logged_until:  # replayed after a crash: logged once already
            before, now = self.logged.get(step), metrics.get(STEP_METRIC)
            if before is not None and now is not None and not math.isclose(before, now, rel_tol=1e-9, abs_tol=1e-12):
                self.replay_mismatch.append(step)
                print(f"warning: replayed step {step} gave {STEP_METRIC} {now:.6g}, but {before:.6g} was logged "
                      "before the crash: this resume is not exact", flush=True)
            return
        from mlflow.entities import Metric

        if STEP_METRIC in metrics:
            self.logged[step] = metrics[STEP_METRIC]
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()
                         if v is not None and math.isfinite(v)]
        if time.monotonic() >= self.retry_at:
            self.flush()

    def replay_until(self, step: int) -> None:
        """Steps up to `step` are logged already: a run that goes back to an earlier checkpoint (a relaunched
        learner group) redoes them without logging them again, and says whether they came out the same."""
        self.logged_until = max(self.logged_until, step)

    def flush(self) -> bool:
        """Send what is pending; False (and a warning the first time) when the server does not take it."""
        try:
            while self.pending:
                self.client.log_batch(self.run_id, metrics=self.pending[:900])
                self.pending = self.pending[900:]
        except Exception as error:  # any outage: the run goes on, the metrics wait
            if not self.failing:
                print(f"warning: MLflow at {mask_credentials(self.uri)} did not take the metrics "
                      f"({type(error).__name__}: {mask_credentials(str(error).splitlines()[0][:200])}); "
                      f"buffering and retrying every {RETRY_S:.0f} s", flush=True)
            self.failing = True
            self.retry_at = time.monotonic() + RETRY_S
            return False
        if self.failing:
            print("MLflow is reachable again: the buffered metrics were sent", flush=True)
        self.failing = False
        return True

    def log_artifact(self, path: str) -> None:
        if not self.enabled:
            return
        try:
            self.client.log_artifact(self.run_id, path)
        except Exception as error:
            print(f"warning: MLflow did not take the artifact {path} ({type(error).__name__}); it stays on disk",
                  flush=True)

    def finish(self, status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        sent = self.flush()
        if not sent and self.unsent_path is not None:
            with open(self.unsent_path, "a") as handle:
                for m in self.pending:
                    handle.write(json.dumps({"key": m.key, "value": m.value, "step": m.step,
                                             "timestamp": m.timestamp}) + "\n")
            print(f"warning: {len(self.pending)} metrics MLflow never took are in {self.unsent_path}", flush=True)
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as error:
            print(f"warning: could not mark the MLflow run {self.run_id} {status} ({type(error).__name__})",
                  flush=True)
