"""evaluate.py and score.py as a user runs them, on the tiny model and generated images."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT, noise_in, run_cli
from launch.score import ScoreFile
from qadata.manifest import read_manifest, write_manifest
from qadata.video_files import write_video
from rewards.answer_format import IQA_ASPECTS, VQA_SCORES

pytestmark = pytest.mark.slow


def constant_set(generated_data, folder):
    """Six real images all rated 3.0 (SRCC undefined) plus a zero-byte file: a manifest of its own."""
    frame = read_manifest(generated_data)
    rows = frame[frame["split"] == "test"].head(6).copy()
    rows["mos"], rows["dataset"] = 3.0, "constant"
    (folder / "empty.png").write_bytes(b"")
    broken = rows.head(1).copy()
    broken["path"] = str(folder / "empty.png")
    return write_manifest(pd.concat([rows, broken], ignore_index=True), folder / "constant.parquet")


def test_evaluate_writes_tables_json_plots_and_mlflow(tiny_model, generated_data, tmp_path):
    out = tmp_path / "eval"
    db = tmp_path / "mlflow.db"
    result = run_cli([
        "launch/evaluate.py", "--model", str(tiny_model), "--config", "configs/local.yaml",
        "--manifest", str(generated_data), "--manifest", str(constant_set(generated_data, tmp_path)),
        "--split", "test", "--limit", "24",
        "--samples", "2", "--temperature", "0.6", "--max-new-tokens", "48", "--threads", "1",
        "--output-dir", str(out), "--tracking-uri", f"sqlite:///{db}",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert not noise_in(result.stdout + result.stderr)
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"tiny", "BRISQUE"}
    assert set(table["dataset"]) == {"generated-global", "constant", "average"}
    ours = table[(table["method"] == "tiny") & (table["dataset"] == "generated-global")].iloc[0]
    assert ours["items"] == 24 and ours["scored"] + ours["unparsed_items"] == 24
    constant = table[(table["method"] == "tiny") & (table["dataset"] == "constant")].iloc[0]
    assert pd.isna(constant["srcc"]) and constant["unreadable"] == 1 and constant["items"] == 7
    average = table[(table["method"] == "tiny") & (table["dataset"] == "average")].iloc[0]
    assert not pd.isna(average["mae"]) and average["items"] == 31
    brisque = table[(table["method"] == "BRISQUE") & (table["dataset"] == "generated-global")].iloc[0]
    assert -1 <= brisque["srcc"] <= 1
    markdown = (out / "results.md").read_text()
    assert "undefined" in markdown and "nan" not in markdown.lower() and "4-par. logistic" in markdown
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 31
    scored = [r for r in records if r["score"] is not None]
    assert scored and all(len(r["answers"]) == 2 and len(r["aspects"]) == 5 for r in scored)
    assert any("cannot read image" in (r["error"] or "") for r in records)
    for name in ("scatter.png", "errors.png"):
        assert (out / name).stat().st_size > 5000
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    run = client.search_runs([client.get_experiment_by_name("preresq-eval").experiment_id])[0]
    assert "tiny/generated-global/srcc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.md", "predictions.json", "scatter.png", "environment.json"} <= artifacts
    environment = json.loads((out / "environment.json").read_text())
    assert environment["model"]["path"] == str(tiny_model) and environment["packages"]["torch"]
    assert environment["config"]["eval.samples"] == 2 and "--limit" in environment["command"]


def test_evaluate_names_a_missing_split_before_starting(tiny_model, generated_data, tmp_path):
    result = run_cli(["launch/evaluate.py", "--model", str(tiny_model), "--manifest", str(generated_data),
                      "--split", "holdout", "--output-dir", str(tmp_path)], timeout=120)
    assert result.returncode != 0
    assert "no rows with split 'holdout'" in result.stderr and "Started a local Ray" not in result.stderr


def test_score_folder_interrupted_and_restarted_has_each_file_once(tiny_model, generated_data, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    images = sorted((generated_data.parent / "images").glob("*.png"))[:200]
    for image in images:
        shutil.copy(image, folder / image.name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.mp4").write_text("not a video")
    frames = np.random.default_rng(0).integers(0, 255, (20, 112, 112, 3), dtype=np.uint8)
    write_video(folder / "clip.mp4", frames, fps=10)
    output = tmp_path / "scores.csv"
    args = [sys.executable, "launch/score.py", "--model", str(tiny_model), "--config", "configs/local.yaml",
            str(folder),
            "--output", str(output), "--batch-size", "2", "--max-new-tokens", "48", "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and (not output.is_file() or output.read_text().count("\n") < 20):
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # Ctrl-C mid-run
    first.communicate(timeout=120)
    lines = output.read_text().splitlines(keepends=True)
    if len(lines) == 204:  # it finished before the signal landed: cut it as a crash mid-write would
        output.write_text("".join(lines[:21]) + lines[21][:15])
    complete = output.read_text().count("\n") - 1  # whole rows on disk (the header aside)
    assert 10 <= complete < 203, complete

    result = run_cli(args[1:])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"{complete} already in" in result.stdout and not noise_in(result.stdout + result.stderr)
    rows = list(csv.DictReader(open(output)))
    paths = [r["path"] for r in rows]
    assert len(rows) == 203 and len(set(paths)) == 203
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert "unsupported file type '.txt'" in errors.pop(str(folder / "notes.txt"))
    assert "cannot read video" in errors.pop(str(folder / "fake.mp4"))
    assert all("no parseable answer" in e for e in errors.values())  # the model's failures, named as such
    assert {r["kind"] for r in rows if r["path"].endswith("clip.mp4")} == {"video"}
    scored = [r for r in rows if r["score"]]
    assert len(scored) + len(errors) == 201 and len(scored) >= 100
    assert all(1 <= float(r["score"]) <= 5 and r["reasoning"] for r in scored)
    # aspects by kind: the five IQA aspects for pictures, global and local scores for clips
    assert all(all(r[a] for a in (VQA_SCORES if r["kind"] == "video" else IQA_ASPECTS)) for r in scored)


def test_score_file_drops_a_torn_last_line(tmp_path):
    for name in ("s.jsonl", "s.csv"):
        out = ScoreFile(tmp_path / name)
        out.append([{"path": "a", "score": 3.0, "reasoning": "two\nlines"}, {"path": "b", "score": 4.0}])
        with open(out.path, "a") as handle:
            handle.write('{"path": "c", "sco' if name.endswith("jsonl") else "c,ima")
        assert [r["path"] for r in out.read()] == ["a", "b"]
        out.append([{"path": "c", "score": 2.0}])
        assert [r["path"] for r in out.read()] == ["a", "b", "c"]


def test_score_file_keeps_odd_characters_and_survives_a_corrupt_line(tmp_path):
    odd = {"path": "dir/a\rb\n,\"c\u2028.png", "score": 3.5, "reasoning": "one\r\ntwo\rthree, \"quoted\"\u2028"}
    for name in ("s.jsonl", "s.csv"):
        out = ScoreFile(tmp_path / name)
        out.append([odd, {"path": "b", "score": 4.0}])
        back = out.read()
        assert [r["path"] for r in back] == [odd["path"], "b"] and back[0]["reasoning"] == odd["reasoning"]
        # A corrupt line mid-file: the rows after it survive, the line is kept aside, named in a warning.
        text = open(out.path, newline="").read()
        cut = text.index("\n", text.index("b")) + 1 if name.endswith("csv") else text.index("\n") + 1
        out.path.write_text(text[:cut] + ("garbage{\n" if name.endswith("jsonl") else "x,y\n") + text[cut:],
                            newline="")
        out.append([{"path": "c", "score": 2.0}])
        assert [r["path"] for r in out.read()] == [r["path"] for r in back] + ["c"]
        assert (tmp_path / f"{name}.corrupt").read_text().strip() in ("garbage{", "x,y")
        assert [r["path"] for r in out.read()] == [r["path"] for r in back] + ["c"]  # the file was repaired


def test_a_reasoning_a_spreadsheet_would_run_is_quoted_in_the_csv(tmp_path):
    out = ScoreFile(tmp_path / "s.csv")
    out.append([{"path": "-odd name.png", "score": 3.0, "reasoning": "=cmd|' /C calc'!A0"}])
    row = out.read()[0]
    assert row["reasoning"] == "'=cmd|' /C calc'!A0" and row["path"] == "-odd name.png"
