"""SRCC / PLCC / KRCC against scipy, the logistic fit, and undefined metrics (never NaN)."""

import numpy as np
import pytest
from scipy import stats

from evaluation.eval_report import markdown_table, results_frame
from evaluation.quality_metrics import fit_logistic4, logistic4, mean_defined, quality_metrics


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy_on_random_data(seed):
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, 200)
    predictions = mos + rng.normal(0, 1.0, 200)
    predictions[:20] = np.round(predictions[:20])  # some ties
    m = quality_metrics(predictions, mos)
    assert m["srcc"] == pytest.approx(stats.spearmanr(predictions, mos).statistic, abs=1e-12)
    assert m["plcc"] == pytest.approx(stats.pearsonr(predictions, mos).statistic, abs=1e-12)
    assert m["krcc"] == pytest.approx(stats.kendalltau(predictions, mos).statistic, abs=1e-12)
    assert m["mae"] == pytest.approx(np.abs(predictions - mos).mean())
    assert m["n"] == 200


@pytest.mark.parametrize("true", [(4.8, 1.3, 0.5, 0.7), (5.0, 1.0, -1.0, 2.0), (1.2, 4.5, 2.0, 0.4)])
def test_logistic_fit_recovers_known_parameters(true):
    rng = np.random.default_rng(1)
    x = rng.uniform(true[2] - 4 * abs(true[3]), true[2] + 4 * abs(true[3]), 400)
    y = logistic4(x, *true) + rng.normal(0, 0.01, x.size)
    fitted = fit_logistic4(x, y)
    fitted[3] = abs(fitted[3])
    assert np.allclose(fitted, true, atol=0.05), fitted


def test_logistic_plcc_beats_raw_on_a_saturating_predictor():
    rng = np.random.default_rng(2)
    x = rng.uniform(-6, 6, 300)
    mos = logistic4(x, 5, 1, 0, 1) + rng.normal(0, 0.05, 300)
    m = quality_metrics(x, mos)
    assert m["plcc_logistic"] > 0.99 > m["plcc"]
    assert m["srcc"] == pytest.approx(stats.spearmanr(x, mos).statistic)


def test_constant_mos_is_undefined_not_nan():
    m = quality_metrics([1.0, 2.0, 3.0, 4.0], [3.0, 3.0, 3.0, 3.0])
    assert m["srcc"] is None and m["plcc"] is None and m["krcc"] is None and m["plcc_logistic"] is None
    assert m["mae"] == pytest.approx(1.0)


def test_empty_and_tiny_sets_are_undefined():
    empty = quality_metrics([], [])
    assert empty["n"] == 0 and empty["srcc"] is None and empty["mae"] is None
    assert quality_metrics([1.0, 2.0], [1.0, 2.0])["srcc"] is None


def test_non_finite_predictions_are_left_out():
    m = quality_metrics([1.0, np.nan, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.5, 5.0])
    assert m["n"] == 4 and m["srcc"] == pytest.approx(1.0)


def test_averages_skip_undefined_datasets():
    rows = [
        {"method": "m", "dataset": "a", "srcc": 0.5, "plcc": 0.4, "plcc_logistic": 0.45, "krcc": 0.3, "mae": 1.0,
         "items": 10, "scored": 10, "parse_failures": 0, "unparsed_items": 0, "unreadable": 0},
        {"method": "m", "dataset": "constant", "srcc": None, "plcc": None, "plcc_logistic": None, "krcc": None,
         "mae": 0.5, "items": 5, "scored": 4, "parse_failures": 1, "unparsed_items": 1, "unreadable": 0},
        {"method": "m", "dataset": "empty", "srcc": None, "plcc": None, "plcc_logistic": None, "krcc": None,
         "mae": None, "items": 0, "scored": 0, "parse_failures": 0, "unparsed_items": 0, "unreadable": 0},
    ]
    table = results_frame(rows)
    average = table[table["dataset"] == "average"].iloc[0]
    assert average["srcc"] == pytest.approx(0.5) and average["mae"] == pytest.approx(0.75)
    assert average["items"] == 15 and average["parse_failures"] == 1
    text = markdown_table(table)
    assert "nan" not in text.lower() and "undefined" in text
    assert mean_defined([None, float("nan")]) is None
