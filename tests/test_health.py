"""The health guard's judgements, its snapshots, the learning-rate schedule, and inputs that used to end a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.lr_schedule import learning_rate
from actors.reward import RewardWorker
from helpers import ROOT, reward_section
from launch.trainer.checkpoint import CheckpointStore
from launch.trainer.config import load_config
from launch.trainer.health import HealthGuard
from rewards.absolute_error import absolute_error_reward
from rewards.answer_format import format_answer, parse_answer, read_scores


def healthy(**changes) -> dict:
    metrics = {"reward/format": 1.0, "answers/parse_rate": 1.0, "answers/within_group_spread": 0.4,
               "answers/item_spread": 0.5,
               "answers/distinct_share": 0.9, "learner/nonfinite": 0.0, "learner/kl": 0.3, "reward/total": 1.3}
    return {**metrics, **changes}


@pytest.fixture
def health():
    return load_config(ROOT / "configs" / "local.yaml").health


def test_a_healthy_run_is_never_breached(health):
    guard = HealthGuard(health)
    rng = np.random.default_rng(0)
    for step in range(1, 200):
        assert guard.check(step, healthy(**{"learner/kl": float(rng.uniform(0.2, 0.6)),
                                            "reward/format": float(rng.choice([0.94, 1.0]))})) is None


def test_format_loss_is_caught_within_its_window(health):
    guard = HealthGuard(health)
    for step in range(1, 11):
        assert guard.check(step, healthy()) is None
    assert guard.check(11, healthy(**{"reward/format": 0.77})) is None  # one bad step: mean of 3 is still 0.92
    breach = guard.check(12, healthy(**{"reward/format": 0.0}))
    assert breach.signal == "format_rate" and breach.step == 12 and breach.window == health.format_rate.window
    assert "health.format_rate.min" in breach.message


@pytest.mark.parametrize("metric, value, signal", [
    ("answers/parse_rate", 0.2, "parse_rate"),
    ("answers/distinct_share", 0.01, "distinct"),
    ("answers/within_group_spread", 0.0, "spread"),
    ("answers/item_spread", 0.0, "item_spread"),
    ("learner/nonfinite", 1.0, "nonfinite"),
    ("learner/kl", 9.0, "kl"),
])
def test_each_signal_breaches_on_its_own(health, metric, value, signal):
    guard = HealthGuard(health)
    breach = None
    for step in range(1, 60):
        breach = guard.check(step, healthy(**({metric: value} if step > 25 else {})))
        if breach:
            break
    assert breach is not None and breach.signal == signal
    assert 25 < breach.step <= 25 + getattr(health, signal).window


def test_kl_spike_over_its_median_and_nonfinite_metrics(health):
    guard = HealthGuard(health)
    for step in range(1, 30):
        assert guard.check(step, healthy(**{"learner/kl": 0.2})) is None
    breach = guard.check(30, healthy(**{"learner/kl": 4.5}))  # under kl.max, 22 x the median
    assert breach.signal == "kl" and "spike" in breach.message
    breach = HealthGuard(health).check(1, healthy(**{"learner/loss": float("nan")}))
    assert breach.signal == "nonfinite" and "learner/loss" in breach.message


def validation(std: float | None) -> dict:
    return {"srcc": 0.3, "prediction_std": std, "scored": 8.0, "items": 8.0}


def test_a_validation_that_gives_every_item_one_score_is_a_breach_back_to_the_last_that_passed(health, tmp_path):
    guard = HealthGuard(health)
    results = {0: validation(0.4)}
    assert guard.check_validation(0, results) is None  # the starting point is not judged: nothing comes before it
    results[100] = validation(0.6)
    assert guard.check_validation(100, results) is None
    results[200] = validation(0.01)
    breach = guard.check_validation(200, results)
    assert breach.signal == "val_spread" and "health.val_spread.min" in breach.message
    assert "validation at step 200" in breach.message and "val/prediction_std" in breach.message
    # roll_back's target is snapshots.before(step - window - 1): the last passing validation's snapshot
    assert breach.step - breach.window - 1 == 100
    results[200] = validation(None)  # nothing scored: health.min_scored's business, not this signal's
    assert guard.check_validation(200, results) is None
    off = load_config(ROOT / "configs" / "local.yaml", ["health.enabled=false"]).health
    assert HealthGuard(off).check_validation(200, {0: validation(0.5), 200: validation(0.0)}) is None
    assert HealthGuard(off).check(1, healthy(**{"reward/format": float("nan")})) is None


def test_the_spread_is_judged_from_the_first_validation_that_tells_the_items_apart(health):
    guard = HealthGuard(health)
    results = {0: validation(1e-4), 1: validation(2e-4)}  # a random model: nothing to collapse from
    assert guard.check_validation(1, results) is None
    why = guard.unarmed_validation_signals(results)["val_spread"]
    assert "health.val_spread is judged from the first validation" in why and "val/prediction_std" in why
    assert "0.0001" in why
    results[2] = validation(0.3)  # it learns to tell them apart ...
    assert guard.check_validation(2, results) is None and guard.unarmed_validation_signals(results) == {}
    results[3] = validation(0.01)  # ... then gives them one score again: a collapse, rolled back to step 2
    breach = guard.check_validation(3, results)
    assert breach.signal == "val_spread" and breach.step - breach.window - 1 == 2
    assert guard.unarmed_validation_signals({0: validation(0.4)}) == {}
    assert guard.unarmed_validation_signals({}) == {}


def test_the_last_validated_snapshot_outlives_the_newest_ones(tmp_path):
    snapshots = CheckpointStore(tmp_path / "healthy", keep=2)

    def learner(folder):
        Path(folder).mkdir()
        (Path(folder) / "weights.bin").write_bytes(b"w")

    for step in (0, 10, 20, 30, 40, 50):
        snapshots.save(step, learner, {"step": step}, also_keep=10 if step >= 10 else 0)
    assert snapshots.steps() == [10, 40, 50]
    assert snapshots.before(200 - 189 - 1) == 10


def test_forgetting_after_a_rollback_restarts_the_windows(health):
    guard = HealthGuard(health)
    for step in range(1, 11):
        guard.check(step, healthy())
    guard.check(11, healthy(**{"reward/format": 0.0}))
    guard.forget_after(8)
    assert [r["step"] for r in guard.recent] == list(range(1, 9))
    assert guard.check(9, healthy()) is None


def test_snapshots_are_kept_newest_first_and_dropped_after_a_rollback(tmp_path):
    snapshots = CheckpointStore(tmp_path / "healthy", keep=3)

    def learner(folder):  # what the learner group writes
        Path(folder).mkdir()
        (Path(folder) / "weights.bin").write_bytes(b"w")

    for step in (0, 10, 20, 30):
        snapshots.save(step, learner, {"step": step})
    assert snapshots.steps() == [10, 20, 30]
    assert snapshots.before(25) == 20 and snapshots.before(5) == 10  # none older: the oldest kept
    assert snapshots.state(20) == {"step": 20}
    snapshots.drop_after(10)
    assert snapshots.steps() == [10]
    assert not list(snapshots.root.glob(".tmp-*"))


def test_learning_rate_schedule():
    assert learning_rate(1, 1e-3, 100, "constant", 10, 0.0, 1.0) == pytest.approx(1e-4)
    assert learning_rate(50, 1e-3, 100, "constant", 0, 0.0, 1.0) == 1e-3
    assert learning_rate(10, 1e-3, 100, "cosine", 10, 0.1, 1.0) == pytest.approx(1e-3)
    assert learning_rate(100, 1e-3, 100, "cosine", 10, 0.1, 1.0) == pytest.approx(1e-4)
    assert learning_rate(55, 1e-3, 100, "cosine", 10, 0.1, 1.0) == pytest.approx(0.55e-3)
    assert learning_rate(50, 1e-3, 100, "constant", 0, 0.0, 0.25) == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match="linear"):
        learning_rate(1, 1e-3, 100, "linear", 0, 0.0, 1.0)


def test_a_160_digit_answer_parses_without_inf():
    digits = "9" * 160
    text = f"<think>sharp</think><answer>\n{digits}\n3.00\n3.00\n3.00\n3.00\n</answer>"
    vector = parse_answer(text, "iqa")
    assert np.all(np.isfinite(vector)) and vector.max() == 100.0
    assert read_scores(text, "iqa") is None
    assert read_scores("<answer>" + "9" * 400 + " 2 2 2 2</answer>", "iqa") is None
    good = format_answer("fine", [3, 3, 3, 3, 3])
    scored = RewardWorker(reward_section()).score([[text, good, good], [good, good, text]], [2.0, 4.0],
                                                  ["iqa", "iqa"])
    for key, value in {**scored.terms, "predictions": scored.predictions}.items():
        assert np.all(np.isfinite(value)), key
    assert scored.parsed.tolist() == [[0, 1, 1], [1, 1, 0]]


def test_absolute_error_reward_and_its_worker_option():
    assert absolute_error_reward(np.array([[1.0, 3.0, 5.0]]), np.array([3.0])).tolist() == [[0.5, 1.0, 0.5]]
    answers = [[format_answer("x", [2] * 5), format_answer("x", [4] * 5)]]
    plain = RewardWorker(reward_section(accuracy="absolute_error")).score(answers, [2.0], ["iqa"])
    assert plain.terms["accuracy"].tolist() == [[1.0, 0.5]] and plain.terms["total"].tolist() == [[2.0, 1.5]]
    with pytest.raises(ValueError, match="reward.accuracy"):
        RewardWorker(reward_section(accuracy="mse"))
