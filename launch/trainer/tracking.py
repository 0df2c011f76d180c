"""MLflow tracking: params once, each step's metrics in batch calls, artifacts at the end, all sent from a
background thread, so the training loop never waits for the tracking server.

Default store: MLFLOW_TRACKING_URI, else a local SQLite file `mlflow.db` in the working directory.

A run outlives its tracking server. Metrics wait in a bounded queue (tracking.queue_metrics); a server that is
down, slow or blackholed holds up the sender only, which warns once and tries again every RETRY_S; metrics that
overflow the queue go straight to `<output_dir>/mlflow-unsent.jsonl` (counted), as does whatever is still unsent
when the run ends (after waiting up to tracking.timeout_s). A server that refuses a batch for good (HTTP 4xx) gets
a warning once and the batch is dropped. A run whose server is down at start opens its MLflow run when the server
answers. A resumed run logs into the same MLflow run and does not log again the steps it logged before the crash
(it replays them, and says whether the replay gave the same reward). No secret reaches MLflow: credentials in
URIs are masked and keys that look like secrets are dropped from the params.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import os
import re
import threading
import time
from functools import partial
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
    """enabled: tracking.enabled; uri: tracking.uri; queue_metrics: tracking.queue_metrics; timeout_s:
    tracking.timeout_s (how long start-up waits for the run to open, and the end for the queue to drain);
    run_id: the MLflow run to resume; unsent_path: where metrics that never got through are written."""

    def __init__(self, enabled: bool, uri: str | None, experiment: str, run_name: str, params: dict,
                 queue_metrics: int, timeout_s: float, run_id: str | None = None,
                 unsent_path: str | Path | None = None):
        self.enabled, self.timeout_s, self.capacity = enabled, timeout_s, queue_metrics
        self.run_id = run_id if enabled else None  # known at once for a resumed run (its checkpoints keep naming it)
        self.logged: dict[int, float] = {}  # STEP_METRIC by step, as logged (before a crash, or in this process)
        self.logged_until = -1
        self.replay_mismatch: list[int] = []
        self.unsent_path = Path(unsent_path) if unsent_path else None
        self.dropped = 0  # metrics that overflowed the queue (written to unsent_path) or a server refused
        if not enabled:
            return
        # An unreachable server costs the sender seconds, not MLflow's default minutes of retries, per try.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        # log_table reads the table back to append to it, with a progress bar per call: not the console's business.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow.tracking import MlflowClient

        # A new SQLite store announces its schema set-up at INFO; the run's own lines say where the store is.
        for name in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.uri = tracking_uri(uri)
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        self._lock = threading.Lock()
        self._wake, self._closing, self.opened = threading.Event(), threading.Event(), threading.Event()
        self._queue: collections.deque = collections.deque()  # Metric, oldest first
        self._artifacts: list[tuple] = []  # (path,) a file, or (data, artifact_file) a table
        self._status: str | None = None
        self._warned: set[str] = set()
        self._sender = threading.Thread(target=self._send, args=(experiment, run_name, params, run_id),
                                        name="mlflow-sender", daemon=True)
        self._sender.start()
        self.opened.wait(timeout_s)  # a resumed run learns what it logged before; a down server costs timeout_s

    @property
    def pending(self) -> list:
        """The metrics not yet accepted by the server."""
        if not self.enabled:
            return []
        with self._lock:
            return list(self._queue)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queued at once (never waits for the server)."""
        if not self.enabled:
            return
        if step <= self.logged_until:  # replayed after a crash or a relaunch: logged once already
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
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        with self._lock:
            room = max(0, self.capacity - len(self._queue))
            self._queue.extend(batch[:room])
            overflow = batch[room:]
        if overflow:
            self.dropped += len(overflow)
            self._spill(overflow)
            self._warn_once("full", f"warning: MLflow is {len(self._queue)} metrics behind (tracking.queue_metrics); "
                                    f"the newest go to {self.unsent_path} instead")
        self._wake.set()

    def replay_until(self, step: int) -> None:
        """Steps up to `step` are logged already: a run that goes back to an earlier checkpoint (a relaunched
        learner group) redoes them without logging them again, and says whether they came out the same."""
        self.logged_until = max(self.logged_until, step)

    def log_artifact(self, path: str) -> None:
        """Sent after the metrics queued before it; one the server does not take stays on disk (a warning)."""
        self._queue_artifact((path,))

    def log_table(self, data: dict[str, list], artifact_file: str, step: int) -> None:
        """Rows (column -> values; a column of PIL images becomes pictures) appended to the MLflow table
        `artifact_file` after the metrics queued before them; a replayed step's rows are not sent twice."""
        if step > self.logged_until:
            self._queue_artifact((data, artifact_file))

    def _queue_artifact(self, entry: tuple) -> None:
        if self.enabled:
            with self._lock:
                self._artifacts.append(entry)
            self._wake.set()

    def finish(self, status: str = "FINISHED") -> None:
        """Send what is queued, within tracking.timeout_s, and mark the MLflow run `status`; what did not get through
        is written to the unsent file."""
        if not self.enabled:
            return
        self._status = status
        self._closing.set()
        self._wake.set()
        self._sender.join(self.timeout_s)
        with self._lock:
            left = list(self._queue)
            self._queue.clear()
        if left:
            self._spill(left)
        if self.dropped or left:
            print(f"warning: {len(left) + self.dropped} metrics MLflow never took are in {self.unsent_path}",
                  flush=True)
        if self._sender.is_alive():
            print(f"warning: MLflow at {mask_credentials(self.uri)} did not answer within tracking.timeout_s = "
                  f"{self.timeout_s:g} s at the end; the run may not be marked {status} there", flush=True)

    # ------------------------------------------------------------------ the sender thread

    def _send(self, experiment: str, run_name: str, params: dict, run_id: str | None) -> None:
        while not self._open(experiment, run_name, params, run_id):
            if self._closing.is_set():  # tried once more after finish() began: finish() writes the queue out
                return
            self._closing.wait(RETRY_S)
        while True:
            with self._lock:
                batch = list(itertools.islice(self._queue, 900))
                artifacts = [] if batch else self._artifacts[:]
            if batch:
                result = self._call(partial(self.client.log_batch, self.run_id, metrics=batch), "the metrics")
                if result == "failed":  # kept for the next try; finish() writes what is left to the unsent file
                    if self._closing.is_set():
                        return
                    self._closing.wait(RETRY_S)
                    continue
                with self._lock:
                    for metric in batch:  # finish() may have written the queue out meanwhile
                        if self._queue and self._queue[0] is metric:
                            self._queue.popleft()
                    if result == "refused":
                        self.dropped += len(batch)
                continue
            for entry in artifacts:
                if len(entry) == 1:
                    send, what = partial(self.client.log_artifact, self.run_id, entry[0]), f"the artifact {entry[0]}"
                else:
                    send, what = partial(self.client.log_table, self.run_id, *entry), f"the table {entry[1]}"
                if self._call(send, what) != "sent":
                    print(f"warning: MLflow did not take {what}; it stays on disk", flush=True)
                with self._lock:
                    self._artifacts.remove(entry)
            if self._closing.is_set() and not self._queue and not self._artifacts:
                if self._call(partial(self.client.set_terminated, self.run_id, status=self._status),
                              "the run's status") != "sent":
                    print(f"warning: could not mark the MLflow run {self.run_id} {self._status}", flush=True)
                return
            self._wake.wait(1.0)
            self._wake.clear()

    def _open(self, experiment: str, run_name: str, params: dict, run_id: str | None) -> bool:
        """The MLflow run created (with its params) or, resumed, marked RUNNING with what it logged before."""
        def open_run():
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            if run_id is None:
                if self.run_id is None:  # a try that failed after creating it does not create another
                    self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
                self._log_params(params)
            else:
                self.client.update_run(run_id, status="RUNNING")
                history = {m.step: m.value for m in self.client.get_metric_history(run_id, STEP_METRIC)}
                self.logged.update(history)
                self.logged_until = max(self.logged_until, max(history, default=-1))
                with self._lock:  # queued before the history was known: replays of logged steps
                    kept = [m for m in self._queue if m.step > self.logged_until]
                    self._queue.clear()
                    self._queue.extend(kept)

        if self._call(open_run, "the run") != "sent":
            return False
        self.opened.set()
        return True

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in public_params(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def _call(self, send, what: str) -> str:
        """send() -> "sent"; "failed" in an outage (warned once until it ends); "refused" when the server says no
        for good (HTTP 4xx: warned, not tried again)."""
        try:
            send()
        except Exception as error:  # any failure of the server or the store: the run goes on
            status = getattr(error, "get_http_status_code", lambda: None)()
            detail = f"{type(error).__name__}: {mask_credentials(str(error).splitlines()[0][:200])}"
            if status is not None and 400 <= status < 500 and status not in (404, 408, 429):
                print(f"warning: MLflow refused {what} ({detail}); not sent again", flush=True)
                return "refused"
            self._warn_once("outage", f"warning: MLflow at {mask_credentials(self.uri)} did not take {what} "
                                      f"({detail}); the run goes on, and the sender tries again every {RETRY_S:.0f} s")
            return "failed"
        if "outage" in self._warned:
            self._warned.discard("outage")
            print("MLflow is reachable again: the queued metrics are being sent", flush=True)
        return "sent"

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            print(message, flush=True)

    def _spill(self, metrics: list) -> None:
        if self.unsent_path is None:
            return
        with open(self.unsent_path, "a") as handle:
            for m in metrics:
                handle.write(json.dumps({"key": m.key, "value": m.value, "step": m.step,
                                         "timestamp": m.timestamp}) + "\n")
