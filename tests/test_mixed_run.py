"""A training run on a manifest mixing images, videos and deliberately broken media: the bad files are
counted and named, the odd-but-valid ones are used, nothing crashes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_training_run import overrides

from helpers import run_cli, video_settings
from qadata.benchmark_set import ci_benchmark
from qadata.manifest import read_manifest, write_manifest
from qadata.media import load_pictures
from qadata.video_files import write_video

pytestmark = pytest.mark.slow


def broken_media(folder) -> dict[str, tuple[str, bool]]:
    """name -> (kind, readable): the usual ways media arrives broken or odd."""
    folder.mkdir()
    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n")
    write_video(folder / "one_frame.mp4", rgb[None], fps=25)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(folder / "deep.png")
    (folder / "whole.jpg").unlink()
    return {"truncated.jpg": ("image", False), "empty.png": ("image", False), "text.mp4": ("video", False),
            "one_frame.mp4": ("video", True), "cmyk.jpg": ("image", True), "deep.png": ("image", True)}


def test_odd_media_load_and_broken_media_raise(tmp_path):
    from qadata.media import MediaError

    for name, (kind, readable) in broken_media(tmp_path / "media").items():
        if readable:
            assert all(p.mode == "RGB" for p in load_pictures(tmp_path / "media" / name, kind, video_settings()))
        else:
            with pytest.raises(MediaError, match=name):
                load_pictures(tmp_path / "media" / name, kind, video_settings())


def mixed_manifest(tmp_path) -> tuple[Path, dict[str, tuple[str, bool]]]:
    """A manifest of 6 training images, 6 clips and the broken media (train and test), and those media."""
    bench = read_manifest(ci_benchmark(tmp_path / "bench"))
    good = pd.concat([bench[(bench["kind"] == "image") & (bench["split"] == "train")].head(6),
                      bench[(bench["kind"] == "video") & (bench["split"] == "train")].head(6)])
    bad = broken_media(tmp_path / "broken")
    odd = pd.DataFrame([{"path": str(tmp_path / "broken" / n), "mos": 3.0, "dataset": "broken", "kind": k}
                        for n, (k, _) in bad.items()])
    frame = pd.concat([good.assign(split="train"), odd.assign(split="train"), good.head(2).assign(split="test"),
                       good.tail(2).assign(split="test"), odd.assign(split="test")], ignore_index=True)
    return write_manifest(frame[["path", "mos", "dataset", "split", "kind"]], tmp_path / "mixed.parquet"), bad


def test_mixed_image_video_run_with_broken_media(tiny_model, tmp_path):
    manifest, bad = mixed_manifest(tmp_path)
    out = tmp_path / "run"
    # A whole answer is ~47 tokens (IQA) or ~35 (VQA): rollouts and validation get room to finish it
    # (cut-off answers earn no format reward, and two such steps teach the model to stop answering).
    # local.yaml's lr (5e-4) moves this model's greedy format within 2 steps on 12 items; 1e-4 keeps it.
    args = overrides(tiny_model, manifest, out, **{"trainer.steps": 2, "data.eval_limit": 12, "eval.max_new_tokens": 56,
                                                   "rollout.max_new_tokens": 56, "learner.lr": 1e-4})
    result = run_cli(["launch/grpo.py", "--config", "configs/local.yaml", *args])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    skipped = {p.rsplit("/", 1)[-1] for p in summary["skipped_media"]}
    assert skipped == {n for n, (_, readable) in bad.items() if not readable}
    for name in skipped:
        assert "skipping unreadable media" in result.stdout and name in result.stdout
    # 4 good + 3 readable odd items were validated (and the unreadable ones counted): 4 images scored as
    # IQA, 3 videos as VQA (the tiny model was warmed up on both answer formats), so 5 or more scored means
    # videos were scored too.
    assert summary["val_after"]["items"] == 7 + len(skipped) and summary["val_after"]["unreadable"] == len(skipped)
    assert summary["val_before"]["scored"] >= 5 and summary["val_after"]["scored"] >= 5, summary
    # Two steps from the format warm-up leave one score for every item (spread ~0.00x): said, not hidden
    assert summary["flat_policy"] == (summary["val_after"]["prediction_std"] < 0.05)
    assert ("warning: the final policy gives the held-out items one score" in result.stdout) == summary["flat_policy"]
