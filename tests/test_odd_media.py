"""At least 20 kinds of broken or odd media, through the loader, training, evaluate.py and score.py: each
is loaded, or named and skipped (a MediaError, a counted item, a row with its error); nothing crashes."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from helpers import run_cli, video_settings
from odd_media import kind_of, make_odd_media
from qadata.manifest import items, read_manifest, write_manifest
from qadata.media import MediaError
from qadata.requests import media_request


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd") / "media"
    return folder, make_odd_media(folder)


def test_each_kind_loads_or_is_a_media_error_naming_the_file(odd):
    folder, kinds = odd
    assert len(kinds) >= 20 and sum(v == "refused" for v in kinds.values()) >= 12
    for name, expected in kinds.items():
        path = str(folder / name)
        task = "iqa" if kind_of(name) == "image" else "vqa"
        try:
            request = media_request(name, path, kind_of(name), task, video_settings())
        except MediaError as error:
            assert expected != "loads" and path in str(error), (name, error)
            continue
        assert expected != "refused", name
        assert all(p.mode == "RGB" and min(p.size) >= 1 for p in request.images)


def odd_manifest(folder, kinds, generated_data, path):
    good = items(read_manifest(generated_data), "train")[:8]
    rows = [{"path": str(folder / name), "mos": 3.0, "dataset": f"odd-{kind_of(name)}s", "split": split,
             "kind": kind_of(name)}
            for name in kinds for split in ("train", "test")]
    rows += [{"path": i.path, "mos": i.mos, "dataset": "odd-images", "split": "train", "kind": i.kind} for i in good]
    return write_manifest(pd.DataFrame(rows), path)


@pytest.mark.slow
def test_training_evaluate_and_score_go_through_every_kind(odd, tiny_model, generated_data, tmp_path):
    folder, kinds = odd
    refused = {name for name, e in kinds.items() if e == "refused"}
    manifest = odd_manifest(folder, kinds, generated_data, tmp_path / "odd.parquet")
    out = tmp_path / "run"
    # 4 steps of 8 readable items draw more than the 41 training rows: every kind is met.
    train = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", f"model.path={tiny_model}",
                     f"data.train_manifest={manifest}", f"run.output_dir={out}", "trainer.steps=4",
                     "trainer.batch_size=8", "rollout.group_size=2", "rollout.max_new_tokens=24",
                     "eval.max_new_tokens=24", "health.enabled=false",
                     f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    skipped = {p.rsplit("/", 1)[-1] for p in summary["skipped_media"]}
    assert refused <= skipped and not (skipped - refused - {"truncated.mp4"}), skipped ^ refused
    assert summary["val_after"]["items"] == len(kinds) and summary["val_after"]["unreadable"] == len(skipped)
    assert "skipping unreadable media" in train.stdout

    evaluation = run_cli(["launch/evaluate.py", "--model", str(tiny_model), "--config", "configs/local.yaml",
                          "--manifest", str(manifest),
                          "--split", "test", "--max-new-tokens", "24", "--threads", "1", "--no-tracking",
                          "--output-dir", str(tmp_path / "eval")])
    assert evaluation.returncode == 0, evaluation.stdout[-3000:] + evaluation.stderr[-3000:]
    records = {r["path"].rsplit("/", 1)[-1]: r for r in
               json.loads((tmp_path / "eval" / "predictions.json").read_text())}
    assert len(records) == len(kinds)
    for name in refused:
        assert name in (records[name]["error"] or ""), (name, records[name])

    output = tmp_path / "scores.csv"
    score = run_cli(["launch/score.py", "--model", str(tiny_model), "--config", "configs/local.yaml", str(folder),
                     str(folder / "missing.png"),
                     "--output", str(output), "--max-new-tokens", "24", "--threads", "1"])
    assert score.returncode == 0, score.stdout[-3000:] + score.stderr[-3000:]
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(output, newline=""))}
    assert set(rows) == set(kinds) - {"folder.png"}  # a folder given to score.py is searched, not scored
    for name in refused - {"folder.png"}:
        assert rows[name]["error"] and not rows[name]["score"], (name, rows[name])
    assert "does not exist" in rows["dangling.png"]["error"] and "no such file" in rows["missing.png"]["error"]
