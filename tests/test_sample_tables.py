"""Answers next to their pictures: the tables' rows, and a short real run whose MLflow tables hold thumbnails,
answers and scores for the validation items (the same ones each time) and for training samples."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from evaluation.eval_report import safe_text
from launch.trainer.sample_tables import TableLimits, fixed_items, training_rows
from rewards.answer_format import format_answer
from rollouts.backend import Completion, RolloutRequest


def test_fixed_items_spread_over_the_mos_range_and_do_not_change():
    items = [SimpleNamespace(item_id=f"i{k}", mos=m) for k, m in enumerate([3.0, 1.0, 5.0, 2.0, 4.0, 2.5, 4.5])]
    chosen = fixed_items(items, 3)
    assert [i.mos for i in chosen] == [1.0, 3.0, 5.0]
    assert [i.item_id for i in fixed_items(list(reversed(items)), 3)] == [i.item_id for i in chosen]
    assert len(fixed_items(items, 50)) == len(items) and fixed_items(items, 0) == []


def test_a_text_cell_that_a_spreadsheet_would_run_is_quoted():
    assert safe_text("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert safe_text("<think>fine</think>") == "<think>fine</think>" and safe_text(None) == ""


def test_training_rows_are_bounded_and_carry_every_term():
    big = Image.new("RGB", (640, 320), (200, 30, 30))
    requests = [RolloutRequest(f"item{b}", [big], [], "vqa") for b in range(3)]
    text = format_answer("red", [4.0, 3.5])
    answers = [[Completion([1], text) for _ in range(4)] for _ in range(3)]
    kept = [0, 2]  # item 1 was skipped by the engine: not scored, not shown
    rewards = SimpleNamespace(terms={"total": np.full((2, 4), 1.5), "format": np.ones((2, 4))},
                              predictions=np.full((2, 4), 3.75))
    rows = training_rows(7, requests, answers, [2.0, 3.0, 4.0], kept, rewards, np.arange(12.0).reshape(3, 4),
                         TableLimits(items=5, answers=2, thumbnail_px=64))
    assert [(r["item"], r["answer"]) for r in rows] == [("item0", 0), ("item0", 1), ("item2", 0), ("item2", 1)]
    assert max(rows[0]["picture"].size) == 64 and rows[0]["weights_version"] == 6
    assert rows[2]["advantage"] == 8.0 and rows[2]["mos"] == 4.0 and rows[0]["scores"] == "4.00 3.50"
    assert rows[0]["reward/total"] == 1.5 and rows[0]["reward/format"] == 1.0 and rows[0]["reasoning"] == "red"


@pytest.mark.slow
def test_a_short_run_logs_answers_with_their_pictures(tiny_model, generated_data, tmp_path):
    from mlflow.tracking import MlflowClient
    from test_training_run import overrides

    from helpers import run_in_terminal

    out = tmp_path / "run"
    code, console = run_in_terminal(["launch/grpo.py", "--config", "configs/local.yaml",
                                     *overrides(tiny_model, generated_data, out, **{
                                         "trainer.steps": 2, "trainer.eval_every": 2, "tracking.samples_every": 1,
                                         "rollout.max_new_tokens": 64, "eval.max_new_tokens": 64,
                                         "data.eval_limit": 6, "tracking.sample_items": 3,
                                         "tracking.sample_answers": 2, "eval.readout": "expected"})])
    assert code == 0, console[-3000:]
    assert "Downloading artifacts" not in console
    # On a terminal: one live bar with the step rate, no plain step lines; the other lines still print.
    assert re.search(r"2/2 \[[0-9:]+<[0-9:]+, +[0-9.]+(s/step|step/s)\], reward ", console), console[-2000:]
    assert "step 1/2 reward" not in console and "step 2 validation: SRCC" in console
    run_id = json.loads((out / "summary.json").read_text())["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tables = {}
    for kind in ("training", "validation"):
        folder = Path(client.download_artifacts(run_id, f"samples/{kind}.json", str(tmp_path / "download")))
        table = json.loads(folder.read_text())
        tables[kind] = [dict(zip(table["columns"], row)) for row in table["data"]]
    training, validation = tables["training"], tables["validation"]
    assert sorted({r["step"] for r in training}) == [1, 2] and len(training) == 2 * 3 * 2
    assert sorted({r["step"] for r in validation}) == [0, 2]
    assert {r["item"] for r in validation if r["step"] == 0} == {r["item"] for r in validation if r["step"] == 2}
    for row in training + validation:
        picture = row["picture"]
        assert picture["type"] == "image"
        local = Path(client.download_artifacts(run_id, picture["filepath"], str(tmp_path / "pictures")))
        assert max(Image.open(local).size) <= 160
        assert row["text"].startswith("<think>") and row["mos"] >= 1  # the answer as written
    assert any(r["scores"] != "unparsed" and "</answer>" in r["text"] for r in training)
    assert all("reward/total" in r for r in training)
    assert any(r["prediction"] is not None for r in validation)
    # The same rows in the run folder, with a page to open.
    assert len((out / "samples" / "training.jsonl").read_text().splitlines()) == len(training)
    assert "<img src=" in (out / "samples" / "validation.html").read_text()
