"""The controller's own logic, without Ray: data drawing with skips, resume config checks, MLflow outages."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from launch.trainer.config import ConfigError, load_config
from launch.trainer.run_state import config_changes, result_config
from launch.trainer.tracking import Tracker
from qadata.manifest import items, read_manifest, write_manifest
from qadata.requests import RunData
from qadata.sampler import BatchSampler


def test_an_unreadable_item_never_pushes_a_readable_one_out_of_the_epoch(generated_data, tmp_path):
    good = items(read_manifest(generated_data), "train")[:10]
    rows = [{"path": i.path, "mos": i.mos, "dataset": "d", "split": "train", "kind": "image"} for i in good]
    rows += [{"path": str(tmp_path / f"missing-{k}.png"), "mos": 3.0, "dataset": "d", "split": "train",
              "kind": "image"} for k in range(4)]
    manifest = write_manifest(pd.DataFrame(rows), tmp_path / "m.parquet")
    cfg = load_config(None, [f"data.train_manifest={manifest}", "data.eval_split=train"])
    data = RunData(cfg)
    sampler = BatchSampler(len(data.train), seed=0)
    seen = []
    for _ in range(2):  # 10 readable items: two batches of 5 are exactly one epoch of them
        requests, mos = data.batch(sampler, 5)
        seen += [r.item_id for r in requests]
        assert len(mos) == 5 and [r.task for r in requests] == ["iqa"] * 5
    assert sorted(seen) == sorted(i.item_id for i in data.train if "missing" not in i.path)
    assert len(data.skipped) == 4


def test_a_resume_names_each_key_that_would_change_the_result():
    saved = result_config(load_config(None, []))
    same = result_config(load_config(None, ["tracking.experiment=x", "rollout.generate_timeout_s=5",
                                            "trainer.checkpoint_every=7", "run.output_dir=elsewhere"]))
    assert config_changes(saved, same) == []
    changed = result_config(load_config(None, ["run.seed=3", "learner.lr=1e-3"]))
    assert config_changes(saved, changed) == ["learner.lr: 1e-06 -> 0.001", "run.seed: 0 -> 3"]


@pytest.mark.parametrize("overrides, named", [
    (["rollout.group_size=1"], "rollout.group_size"),
    (["rollout.top_p=0"], "rollout.top_p"),
    (["rollout.top_p=1.5"], "rollout.top_p"),
    (["rollout.sync_timeout_s=0"], "rollout.sync_timeout_s"),
    (["reward.max_restarts=-1"], "reward.max_restarts"),
    (["algorithm.clip_low=1"], "algorithm.clip_low"),
    (["learner.lr=0"], "learner.lr"),
    (["learner.betas=[0.9,1.0]"], "learner.betas"),
    (["trainer.steps=[1"], "command line"),
])
def test_out_of_range_values_and_bad_syntax_are_named(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, overrides)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  steps: 3\n  batch_size: [4\nrollout: {}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line \d+"):
        load_config(bad, [])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_server(store: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).parent / "mlflow"
    process = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{store}", "--host",
                                "127.0.0.1", "--port", str(port), "--workers", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError("mlflow server did not start")


def stop(server: subprocess.Popen) -> None:
    """The server and its workers (it runs them as children)."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()


def wait_until(condition, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_tracking_server_outage_is_survived_and_nothing_is_lost(tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    from launch.trainer import tracking

    monkeypatch.setattr(tracking, "RETRY_S", 1.0)
    port, store = free_port(), tmp_path / "mlflow.db"
    server = mlflow_server(store, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        tracker = Tracker(True, uri, "outage", "run", {"a": 1}, 1000, 60, unsent_path=tmp_path / "unsent.jsonl")
        assert tracker.opened.is_set()
        tracker.log_metrics({"reward/total": 1.0}, 1)
        wait_until(lambda: not tracker.pending)
        stop(server)
        started = time.monotonic()
        tracker.log_metrics({"reward/total": 2.0}, 2)  # the server is down: queued, the loop not held up
        tracker.log_metrics({"reward/total": 3.0}, 3)
        assert time.monotonic() - started < 0.5
        wait_until(lambda: "did not take the metrics" in capsys.readouterr().out)
        assert len(tracker.pending) == 2
        server = mlflow_server(store, port)
        wait_until(lambda: not tracker.pending)
        tracker.finish("FINISHED")
        assert "reachable again" in capsys.readouterr().out
        client = MlflowClient(uri)
        history = client.get_metric_history(tracker.run_id, "reward/total")
        assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0), (3, 3.0)]
        assert client.get_run(tracker.run_id).info.status == "FINISHED"
    finally:
        stop(server)


def test_a_blackholed_tracking_server_never_holds_the_loop(tmp_path):
    """A server that accepts connections and never answers: start-up waits tracking.timeout_s, logging never waits,
    the queue is bounded, and everything that did not get through is in the unsent file at the end."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        uri = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        started = time.monotonic()
        tracker = Tracker(True, uri, "blackhole", "run", {"a": 1}, 50, 2, unsent_path=tmp_path / "unsent.jsonl")
        assert 1.5 < time.monotonic() - started < 10 and not tracker.opened.is_set()
        logging = time.monotonic()
        for step in range(1, 101):
            tracker.log_metrics({"reward/total": float(step), "learner/kl": 0.5}, step)
        assert time.monotonic() - logging < 1.0
        assert tracker.dropped == 150  # 200 metrics, room for 50
        tracker.finish("FINISHED")
        assert time.monotonic() - started < 15
    unsent = [json.loads(line) for line in (tmp_path / "unsent.jsonl").read_text().splitlines()]
    assert len(unsent) == 200 and {m["step"] for m in unsent} == set(range(1, 101))


@pytest.mark.slow
def test_a_tracking_server_started_after_the_run_gets_its_metrics(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from launch.trainer import tracking

    monkeypatch.setattr(tracking, "RETRY_S", 1.0)
    port, store = free_port(), tmp_path / "mlflow.db"
    uri = f"http://127.0.0.1:{port}"  # nothing listens yet
    tracker = Tracker(True, uri, "late", "run", {"a": 1}, 1000, 3, unsent_path=tmp_path / "unsent.jsonl")
    assert tracker.run_id is None
    for step in (1, 2, 3):
        tracker.log_metrics({"reward/total": float(step)}, step)
    server = mlflow_server(store, port)
    try:
        wait_until(lambda: tracker.run_id is not None and not tracker.pending, 120)
        tracker.finish("FINISHED")
        client = MlflowClient(uri)
        run = client.get_run(tracker.run_id)
        assert run.data.params == {"a": "1"} and run.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(tracker.run_id, "reward/total")) == [1, 2, 3]
        assert not (tmp_path / "unsent.jsonl").exists()
    finally:
        stop(server)


def test_step_metrics_log_every_reward_term_that_comes_back():
    from actors.learner import deal_samples
    from launch.trainer.metrics import step_metrics
    from rewards.prpo import BatchRewards
    from rollouts.backend import Completion, RolloutRequest

    terms = {"total": np.array([[1.0, 2.0]]), "accuracy": np.array([[0.5, 1.0]]), "format": np.array([[1.0, 1.0]]),
             "novel_term": np.array([[0.25, 0.75]])}
    rewards = BatchRewards(terms, predictions=np.array([[3.0, 4.0]]), parsed=np.array([[1.0, 0.0]]))
    answers = [[Completion([1, 2], "a"), Completion([3], "b")]]
    stats = [{"loss": 0.1, "kl": 0.01, "nonfinite": 0.0, "grad_norm": 0.5, "tokens": 3}]
    metrics = step_metrics(rewards, answers, [3.0], np.array([[-1.0, 1.0]]), stats)
    assert metrics["reward/novel_term"] == 0.5 and metrics["reward/total"] == 1.5 and metrics["reward/format"] == 1.0
    assert not [k for k in metrics if k.startswith("reward/") and k.split("/")[1] not in terms]
    assert "format_rate" not in metrics  # the same number as reward/format: logged once
    assert metrics["answers/parse_rate"] == 0.5 and metrics["answers/distinct_share"] == 1.0
    assert metrics["answers/within_group_spread"] == 0.5 and metrics["learner/tokens"] == 3
    # Answers are dealt to learner ranks in equal consecutive shares, each with its own advantage and its group
    # (the index of its request in the batch): a group stays on one rank where the split allows (its prompt
    # then runs once there).
    requests = [RolloutRequest("x", [], [], "iqa")]
    shards = deal_samples(requests, answers, np.array([[-1.0, 1.0]]), 2)
    assert [[s.advantage for s in shard] for shard in shards] == [[-1.0], [1.0]]
    three = [RolloutRequest(f"r{i}", [], [], "iqa") for i in range(3)]
    rows = [[Completion([i, k], f"{i}{k}") for k in range(2)] for i in range(3)]
    shards = deal_samples(three, rows, np.arange(6.0).reshape(3, 2), 3)
    assert [[s.token_ids[0] for s in shard] for shard in shards] == [[0, 0], [1, 1], [2, 2]]
    assert [[s.group for s in shard] for shard in shards] == [[0, 0], [1, 1], [2, 2]]


def test_a_sigterm_abandons_redoable_work_at_once_and_lets_an_update_finish():
    from launch.trainer.preemption import Preempted, StopRequest

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop = StopRequest()
    stop.install()
    try:
        stop.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)  # during a learner update: noted, the update goes on
        assert stop.requested and stop.seconds_since() >= 0
        with pytest.raises(Preempted):
            stop.check()  # the next safe point
        with pytest.raises(Preempted), stop.abandonable():  # asked before: abandoned on entry
            pass
        fresh = StopRequest()
        fresh.install()
        with pytest.raises(Preempted), fresh.abandonable():
            os.kill(os.getpid(), signal.SIGTERM)  # during generation: abandoned at once
            time.sleep(5)
            raise AssertionError("not abandoned")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_first_ctrl_c_is_a_stop_request_that_cannot_be_lost_and_a_second_aborts():
    from launch.trainer.preemption import Preempted, StopRequest

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop = StopRequest()
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # outside abandonable work: recorded, no KeyboardInterrupt to lose
        assert stop.requested and stop.signal == "SIGINT"
        with pytest.raises(Preempted) as stopped:
            stop.check()
        assert stopped.value.exit_code == 130 and Preempted("SIGTERM", "why").exit_code == 143
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_checkpoints_come_by_step_count_and_by_the_clock():
    from launch.trainer.run_record import RunRecord
    from launch.trainer.training_run import TrainingRun

    def run_with(*overrides):
        cfg = load_config(None, ["trainer.steps=10", "trainer.checkpoint_every=4", *overrides])
        return TrainingRun(cfg, None, None, None, None, None, None, None, RunRecord(), 0)

    by_steps = run_with()
    assert [s for s in range(1, 11) if by_steps.checkpoint_due(s)] == [4, 8]  # 10: the final one, in finish
    by_clock = run_with("trainer.checkpoint_every_s=0.05")
    assert [s for s in (1, 2, 3) if by_clock.checkpoint_due(s)] == []
    time.sleep(0.06)
    assert by_clock.checkpoint_due(3) and not by_clock.checkpoint_due(10)


def test_a_second_controller_in_the_same_output_folder_is_refused_by_name(tmp_path):
    from launch.trainer.setup import claim_output_dir

    first = claim_output_dir(tmp_path)
    with pytest.raises(SystemExit, match=rf"{tmp_path} is in use by another controller \(pid {os.getpid()} on "):
        claim_output_dir(tmp_path)
    first.close()  # the first run ended: the folder is free again
    claim_output_dir(tmp_path).close()


def test_a_relative_output_folder_is_refused_when_joining_a_cluster(monkeypatch):
    from launch.trainer.setup import read_inputs

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SystemExit, match=r"'run\.output_dir' is 'runs/a', a relative path, and this run joins a Ray "
                                         r"cluster"):
        read_inputs(["ray.address=10.0.0.1:6379", "run.output_dir=runs/a"], "")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # as under `ray job submit`
    with pytest.raises(SystemExit, match="relative path"):
        read_inputs(["run.output_dir=runs/a"], "")
