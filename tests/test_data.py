"""Manifests, media, batches and the generated data set."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qadata.generated import DISTORTIONS, TEST_PHOTOS
from qadata.manifest import ManifestError, items, read_manifest, write_manifest
from qadata.media import MediaError, load_image
from qadata.sampler import BatchSampler


def frame(**changes):
    rows = {"path": ["a.png", "b.png"], "mos": [1.5, 4.0], "dataset": ["d", "d"], "split": ["train", "test"],
            "kind": ["image", "image"]}
    rows.update(changes)
    return pd.DataFrame(rows)


def test_manifest_round_trip_makes_paths_absolute(tmp_path):
    path = write_manifest(frame(), tmp_path / "m.parquet")
    loaded = read_manifest(path)
    assert loaded["path"].tolist() == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert [i.mos for i in items(loaded, "train")] == [1.5]


def test_manifest_errors_name_file_row_and_column(tmp_path):
    pd.DataFrame({"path": ["a"], "mos": [3.0]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(ManifestError, match=r"cols\.parquet: missing column 'dataset'"):
        read_manifest(tmp_path / "cols.parquet")
    frame(mos=[1.5, 7.0]).to_parquet(tmp_path / "range.parquet")
    with pytest.raises(ManifestError, match=r"range\.parquet: row 1, column 'mos': 7\.0 is outside"):
        read_manifest(tmp_path / "range.parquet")
    frame(kind=["image", "audio"]).to_parquet(tmp_path / "kind.parquet")
    with pytest.raises(ManifestError, match=r"row 1, column 'kind'"):
        read_manifest(tmp_path / "kind.parquet")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "absent.parquet")
    with pytest.raises(ManifestError, match="split 'val'"):
        items(frame(), "val")


def test_images_of_any_mode_become_rgb_and_bad_files_are_named(tmp_path):
    Image.new("L", (8, 8), 100).save(tmp_path / "gray.png")
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("I;16", (8, 8), 65535).save(tmp_path / "deep.png")
    for name in ("gray.png", "clear.png", "cmyk.jpg", "deep.png"):
        assert load_image(tmp_path / name).mode == "RGB"
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_image(tmp_path / "deep.png").getpixel((0, 0))[0] == 255
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(MediaError, match="empty.jpg"):
        load_image(tmp_path / "empty.jpg")


def test_sampler_resumes_where_it_stopped():
    whole = BatchSampler(10, seed=3)
    expected = [whole.take(4) for _ in range(6)]
    first = BatchSampler(10, seed=3)
    got = [first.take(4) for _ in range(2)]
    resumed = BatchSampler(10, seed=3)
    resumed.load_state(first.state())
    got += [resumed.take(4) for _ in range(4)]
    assert got == expected
    # Each epoch visits every item once.
    flat = [i for batch in expected for i in batch][:20]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))


def test_generated_set_labels_and_splits(generated_data):
    data = read_manifest(generated_data)
    test = data[data["split"] == "test"]
    assert len(test) >= 100 and test["photo"].nunique() >= 4
    assert set(test["photo"]) == set(TEST_PHOTOS)
    assert not set(test["photo"]) & set(data[data["split"] == "train"]["photo"])
    for kind in DISTORTIONS:
        rows = data[data["distortion"] == kind]
        assert np.all(np.diff(rows.groupby("level")["mos"].mean().to_numpy()) < 0)
    # The cue is in the pixels: darker levels really are darker.
    dark = data[(data["distortion"] == "darken") & (data["reference"] == "coffee-0")].sort_values("level")
    means = [np.asarray(load_image(p)).mean() for p in dark["path"]]
    assert np.all(np.diff(means) < 0)


def test_mixed_sampler_weighs_datasets_and_resumes_where_it_stopped():
    from qadata.sampler import MixedSampler, training_sampler

    datasets = ["a"] * 30 + ["b"] * 10
    whole = MixedSampler(datasets, {"a": 1.0, "b": 3.0}, seed=5)
    expected = [whole.take(8) for _ in range(10)]
    drawn = [datasets[i] for batch in expected for i in batch]
    assert 0.65 < drawn.count("b") / len(drawn) < 0.85  # 3:1 by weight, though b has a third of a's items
    first = MixedSampler(datasets, {"a": 1.0, "b": 3.0}, seed=5)
    got = [first.take(8) for _ in range(3)]
    resumed = MixedSampler(datasets, {"a": 1.0, "b": 3.0}, seed=5)
    resumed.load_state(first.state())
    assert got + [resumed.take(8) for _ in range(7)] == expected
    # b's 10 items come once each per b-epoch
    b_draws = [i for batch in expected for i in batch if datasets[i] == "b"]
    assert sorted(b_draws[:10]) == list(range(30, 40))
    only_a = training_sampler(datasets, {"a": 1.0, "b": 0.0}, 0)
    assert all(datasets[i] == "a" for i in only_a.take(20))
    assert isinstance(training_sampler(datasets, {}, 0), BatchSampler)
    for mix, named in [({"a": 1.0}, "not weighed ['b']"), ({"a": 1.0, "b": 1.0, "c": 1.0}, "manifest ['c']"),
                       ({"a": 0.0, "b": 0.0}, "weights"), ({"a": 1.0, "b": -1.0}, ">= 0")]:
        with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
            training_sampler(datasets, mix, 0)


def test_merged_manifests_keep_every_item_once_and_refuse_a_file_listed_twice(tmp_path):
    from launch.build_manifest import main

    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    write_manifest(frame(path=["a.png", "../b.png"]), tmp_path / "one" / "m.parquet")
    (tmp_path / "one" / "a.png").write_bytes((tmp_path / "a.png").read_bytes())
    write_manifest(frame(path=[str(tmp_path / "c.png"), "../b.png"], dataset=["e", "e"], split=["train", "train"]),
                   tmp_path / "two" / "m.parquet")
    with pytest.raises(SystemExit, match=r"b.png is listed twice \(a train/test overlap\).*one/m.parquet row 1 "
                                         r"\(split test\).*two/m.parquet row 1 \(split train\)"):
        main(["--merge", str(tmp_path / "one" / "m.parquet"), str(tmp_path / "two" / "m.parquet"),
              "--out", str(tmp_path / "merged.parquet")])
    write_manifest(frame(path=[str(tmp_path / "c.png")], mos=[2.0], dataset=["e"], split=["train"], kind=["image"]),
                   tmp_path / "two" / "m.parquet")
    main(["--merge", str(tmp_path / "one" / "m.parquet"), str(tmp_path / "two" / "m.parquet"),
          "--out", str(tmp_path / "out" / "merged.parquet")])
    merged = read_manifest(tmp_path / "out" / "merged.parquet")
    ids = [item.item_id for item in items(merged, "all")]
    assert len(set(ids)) == 3 and sorted(merged["dataset"]) == ["d", "d", "e"]
    assert sorted(str(Path(p).resolve()) for p in merged["path"]) == sorted(
        str((tmp_path / p).resolve()) for p in ("one/a.png", "b.png", "c.png"))
