"""The generated benchmark: deterministic, labels fall with level, splits hold out content and a type,
and BRISQUE finds it learnable but not solved."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from evaluation.brisque_baseline import brisque_score
from helpers import video_settings
from qadata.benchmark_set import HELD_OUT, IMAGE_TYPES, VIDEO_TYPES, ci_benchmark
from qadata.manifest import read_manifest
from qadata.video import video_pictures


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> pd.DataFrame:
    return read_manifest(ci_benchmark(tmp_path_factory.mktemp("bench")))


def test_ci_set_size_and_determinism(benchmark, tmp_path):
    assert benchmark["kind"].value_counts().to_dict() == {"image": 144, "video": 30}
    again = read_manifest(ci_benchmark(tmp_path / "again"))
    assert np.array_equal(again["mos"], benchmark["mos"]) and list(again["split"]) == list(benchmark["split"])
    assert benchmark["mos"].between(1, 5).all() and (benchmark["mos_std"] > 0).any()


def test_labels_fall_with_level_in_every_type(benchmark):
    for (kind, distortion), group in benchmark.groupby(["kind", "distortion"]):
        assert stats.spearmanr(group["level"], group["mos"]).statistic <= -0.9, (kind, distortion)
    assert set(benchmark["distortion"]) == set(IMAGE_TYPES) | set(VIDEO_TYPES)


def test_splits_hold_out_references_and_one_type(benchmark):
    for kind, held in HELD_OUT.items():
        rows = benchmark[benchmark["kind"] == kind]
        assert set(rows.loc[rows["distortion"] == held, "split"]) == {"unseen_type"}
        assert held not in set(rows.loc[rows["split"] != "unseen_type", "distortion"])
    train = set(benchmark.loc[benchmark["split"] == "train", "reference"])
    test = set(benchmark.loc[benchmark["split"] == "test", "reference"])
    assert train and test and not train & test


def test_clips_decode_through_the_video_flow(benchmark):
    clip = benchmark[benchmark["kind"] == "video"].iloc[0]
    grid, *local = video_pictures(clip["path"], video_settings())
    assert len(local) == 3 and local[0].size == (64, 64)


def test_brisque_is_clearly_but_not_perfectly_right(benchmark):
    images = benchmark[(benchmark["kind"] == "image") & (benchmark["split"] != "unseen_type")]
    scores = [brisque_score(Image.open(p)) for p in images["path"]]
    srcc = stats.spearmanr(-np.array(scores), images["mos"]).statistic
    assert 0.2 < srcc < 0.9, srcc
