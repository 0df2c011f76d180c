"""Strict answer parsing for evaluation and the per-set metrics with failures counted, not guessed."""

import numpy as np
import pytest

from evaluation.prediction import ItemPrediction, read_item
from evaluation.validation import set_metrics
from rewards.answer_format import format_answer, read_scores

GOOD = format_answer("bright and sharp", [4.0, 3.5, 4.5, 4.0, 3.0])


def test_read_scores_takes_the_answer_block_only():
    assert np.allclose(read_scores(GOOD, "iqa"), [4.0, 3.5, 4.5, 4.0, 3.0])
    assert np.allclose(read_scores("<think>t</think><answer>4.1\n2.3</answer>", "vqa"), [4.1, 2.3])


@pytest.mark.parametrize("text", [
    "<think>5 5 5 5 5</think> no answer block",                # numbers outside the block are not used
    "<think>x</think><answer>4.0\n3.0\n2.0\n1.0</answer>",      # four numbers for IQA
    "<think>x</think><answer>4.0\n3.0\n2.0\n1.0\n7.5</answer>",  # off the [1, 5] scale
    "<think>x</think><answer>4.0\n3.0\n2.0\n1.0\n2.0",          # never closed
    "",
])
def test_read_scores_fails_instead_of_guessing(text):
    assert read_scores(text, "iqa") is None


def test_read_item_averages_parseable_answers_and_counts_the_rest():
    other = format_answer("dark", [2.0, 2.0, 2.0, 2.0, 2.0])
    p = read_item("x", [GOOD, "garbage", other], "iqa")
    assert p.parsed == 2 and p.failures == 1
    assert p.score == pytest.approx((3.8 + 2.0) / 2)
    assert p.score_std == pytest.approx(0.9)
    assert p.aspects == pytest.approx([3.0, 2.75, 3.25, 3.0, 2.5])
    assert p.reasoning == "bright and sharp"


def test_all_answers_unparseable_leaves_the_item_unscored():
    p = read_item("x", ["no", "numbers 3 4"], "iqa")
    assert p.score is None and p.aspects is None and p.failures == 2


def test_set_metrics_counts_failures_and_leaves_them_out():
    preds = [ItemPrediction(str(i), score=float(s), answers=["a"], parsed=1) for i, s in enumerate([1, 2, 3, 4])]
    preds.append(ItemPrediction("bad", answers=["a", "b"], parsed=0))
    preds.append(ItemPrediction("gone", error="x.jpg: cannot read image"))
    m = set_metrics(preds, [1.5, 2.5, 3.5, 4.5, 5.0, 1.0])
    assert m["srcc"] == pytest.approx(1.0) and m["n"] == 4 and m["mae"] == pytest.approx(0.5)
    assert m["items"] == 6 and m["scored"] == 4 and m["parse_failures"] == 2
    assert m["unparsed_items"] == 1 and m["unreadable"] == 1


def test_empty_set_and_constant_mos_do_not_crash():
    empty = set_metrics([], [])
    assert empty["items"] == 0 and empty["srcc"] is None and empty["prediction_mean"] is None
    preds = [ItemPrediction(str(i), score=float(i + 1), answers=["a"], parsed=1) for i in range(5)]
    constant = set_metrics(preds, [3.0] * 5)
    assert constant["srcc"] is None and constant["plcc"] is None and constant["mae"] == pytest.approx(1.2)
    assert not any(isinstance(v, float) and np.isnan(v) for v in constant.values())
