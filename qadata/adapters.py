"""Dataset adapters: the label files each quality set ships, as its authors publish them -> a manifest.

Each adapter reads the set's own label file(s) under its root folder and returns one row per item:
the media path relative to the root, the raw score, a split and any useful extra columns.
`build_frame` then normalises MOS per dataset to [1, 5] by min-max over the set (DMOS flipped first,
so higher is always better), keeping the raw score in `mos_raw` (ALGORITHM.md, "Answers").

Where a detail of a published format is not known to us, the adapter says so in `caveat`; it then
accepts the layout described there, and fails with the file and column named otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# KADID-10K split by reference image, as used by VisualQuality-R1 and PreResQ-R1 (benchmarks.md).
KADID_VAL = {f"I{n:02d}" for n in (7, 12, 14, 15, 16, 27, 32, 35, 36, 41, 44, 49, 55, 66, 67, 70)}
KADID_TEST = {f"I{n:02d}" for n in (19, 29, 30, 34, 37, 38, 43, 50, 64, 71, 72, 73, 74, 78, 80, 81)}


class LabelFileError(ValueError):
    """A label file that is missing or not in the expected layout; names the file and what is wrong."""


@dataclass(frozen=True)
class Adapter:
    name: str                      # the manifest's `dataset` value
    kind: str                      # image | video
    higher_is_better: bool         # False for DMOS sets: flipped before normalising
    files: str                     # what it reads, relative to the root
    read: Callable[[Path], pd.DataFrame]  # root -> columns path, mos_raw, split (+ extras)
    caveat: str = ""


# ----------------------------------------------------------------------------- reading helpers


def _need(path: Path) -> Path:
    if not path.is_file():
        raise LabelFileError(f"label file not found: {path}")
    return path


def _columns(frame: pd.DataFrame, source: Path, *names: str) -> None:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise LabelFileError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


def _table(path: Path, **kwargs) -> pd.DataFrame:
    """CSV or Excel by extension."""
    _need(path)
    if path.suffix.lower() in (".xlsx", ".xls"):
        return pd.read_excel(path, **kwargs)
    return pd.read_csv(path, **kwargs)


def _mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(_need(path))
    except (ValueError, NotImplementedError, OSError) as error:
        raise LabelFileError(f"{path}: cannot read as a MATLAB file ({error})") from None


def _mat_strings(values) -> list[str]:
    """A MATLAB cell array of strings (any nesting scipy gives it) -> list of str."""
    out = []
    for value in np.asarray(values, dtype=object).ravel():
        while isinstance(value, np.ndarray):
            value = value.ravel()[0] if value.size else ""
        out.append(str(value))
    return out


def _frame(paths, scores, split="all", **extras) -> pd.DataFrame:
    frame = pd.DataFrame({"path": list(paths), "mos_raw": np.asarray(scores, dtype=float), **extras})
    frame["split"] = split if isinstance(split, str) else list(split)
    return frame


def _first_existing(root: Path, *names: str) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise LabelFileError(f"none of {list(names)} found under {root}")


# ----------------------------------------------------------------------------- image sets


def read_kadid10k(root: Path) -> pd.DataFrame:
    source = root / "dmos.csv"
    table = _table(source)
    _columns(table, source, "dist_img", "ref_img", "dmos")
    reference = table["ref_img"].str.replace(r"\.\w+$", "", regex=True)
    split = np.where(reference.isin(KADID_TEST), "test", np.where(reference.isin(KADID_VAL), "val", "train"))
    distortion = table["dist_img"].str.extract(r"_(\d+)_(\d+)\.")
    return _frame("images/" + table["dist_img"], table["dmos"], split, reference=reference,
                  distortion=distortion[0].astype(int), level=distortion[1].astype(int))


def read_koniq10k(root: Path) -> pd.DataFrame:
    source = _first_existing(root, "koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv")
    table = _table(source)
    _columns(table, source, "image_name", "MOS")
    split = table["set"].replace({"training": "train", "validation": "val"}) if "set" in table else "all"
    extras = {"mos_std": table["SD"]} if "SD" in table else {}
    return _frame("1024x768/" + table["image_name"], table["MOS"], split, **extras)


def read_spaq(root: Path) -> pd.DataFrame:
    source = root / "Annotations" / "MOS and Image attribute scores.xlsx"
    table = _table(source)
    _columns(table, source, "Image name", "MOS")
    folder = "Dataset/TestImage/" if (root / "Dataset" / "TestImage").is_dir() else "TestImage/"
    return _frame(folder + table["Image name"].astype(str), table["MOS"])


def read_live_challenge(root: Path) -> pd.DataFrame:
    names = _mat_strings(_mat(root / "Data" / "AllImages_release.mat")["AllImages_release"])
    mos = np.asarray(_mat(root / "Data" / "AllMOS_release.mat")["AllMOS_release"], float).ravel()
    if len(names) != len(mos):
        raise LabelFileError(f"{root / 'Data'}: {len(names)} image names but {len(mos)} MOS values")
    # The release lists the 7 training images (Images/trainingImages/) first; they are not part of the 1,162.
    offset = 7 if len(names) > 1162 else 0
    return _frame(["Images/" + n for n in names[offset:]], mos[offset:])


def read_bid(root: Path) -> pd.DataFrame:
    source = _first_existing(root, "DatabaseGrades.xlsx", "DatabaseGrades.xls", "DatabaseGrades.csv")
    table = _table(source)
    number = next((c for c in table.columns if "number" in str(c).lower()), None)
    grade = next((c for c in table.columns if "grade" in str(c).lower() or "score" in str(c).lower()), None)
    if number is None or grade is None:
        raise LabelFileError(f"{source}: expected an image-number and a grade column; found {list(table.columns)}")
    names = [f"ImageDatabase/DatabaseImage{int(n):04d}.JPG" for n in table[number]]
    return _frame(names, table[grade])


def read_agiqa3k(root: Path) -> pd.DataFrame:
    source = root / "data.csv"
    table = _table(source)
    _columns(table, source, "name", "mos_quality")
    extras = {"mos_std": table["std_quality"]} if "std_quality" in table else {}
    folder = "AGIQA-3K/" if (root / "AGIQA-3K").is_dir() else ""
    return _frame(folder + table["name"], table["mos_quality"], **extras)


def read_pipal(root: Path) -> pd.DataFrame:
    folder = root / "Train_Label"
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise LabelFileError(f"no label files (*.txt) in {folder}")
    rows = []
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(",")
            if len(parts) != 2:
                raise LabelFileError(f"{file}: line {number}: expected 'image,elo', got {line!r}")
            rows.append((parts[0].strip(), float(parts[1])))
    # Distorted images are spread over Distortion_1..4 in the release; find each one's folder.
    where = {p.name: p.relative_to(root).as_posix() for p in root.glob("Distortion_*/*")}
    paths = [where.get(name, f"Distortion_1/{name}") for name, _ in rows]
    return _frame(paths, [s for _, s in rows], reference=[n.split("_")[0] for n, _ in rows])


def _name_score_lines(source: Path, score_first: bool) -> tuple[list[str], list[float]]:
    """A text file of 'score name' (or 'name score') lines -> (names, scores)."""
    rows = [line.split() for line in _need(source).read_text().splitlines() if line.strip()]
    layout = "'score name'" if score_first else "'name score'"
    for number, row in enumerate(rows, 1):
        if len(row) != 2:
            raise LabelFileError(f"{source}: line {number}: expected {layout}, got {' '.join(row)!r}")
    if score_first:
        rows = [(name, score) for score, name in rows]
    try:
        return [name for name, _ in rows], [float(score) for _, score in rows]
    except ValueError as error:
        raise LabelFileError(f"{source}: a score is not a number ({error})") from None


def read_tid2013(root: Path) -> pd.DataFrame:
    names, mos = _name_score_lines(root / "mos_with_names.txt", score_first=True)
    return _frame(["distorted_images/" + n for n in names], mos, reference=[n[:3].lower() for n in names],
                  distortion=[int(n[4:6]) for n in names], level=[int(n[7]) for n in names])


def read_csiq(root: Path) -> pd.DataFrame:
    names, dmos = _name_score_lines(root / "csiq_label.txt", score_first=False)
    kinds = [n.split(".")[1] for n in names]
    return _frame([f"dst_imgs/{k}/{n}" for k, n in zip(kinds, names)], dmos,
                  reference=[n.split(".")[0] for n in names], distortion=kinds)


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def read_live(root: Path) -> pd.DataFrame:
    data = _mat(root / "dmos.mat")
    dmos, originals = np.asarray(data["dmos"], float).ravel(), np.asarray(data["orgs"]).ravel()
    references = _mat_strings(_mat(root / "refnames_all.mat")["refnames_all"])
    paths = [f"{folder}/img{k}.bmp" for folder, count in LIVE_FOLDERS for k in range(1, count + 1)]
    if not len(dmos) == len(originals) == len(references) == len(paths):
        raise LabelFileError(f"{root}: dmos.mat / refnames_all.mat do not have the 982 entries of LIVE release 2")
    keep = originals != 1  # the reference images themselves (DMOS 0) are not test items
    folders = [p.split("/")[0] for p in paths]
    return _frame(np.array(paths)[keep], dmos[keep], reference=np.array(references)[keep],
                  distortion=np.array(folders)[keep])


def read_two_column(root: Path) -> pd.DataFrame:
    source = _first_existing(root, "mos.csv", "labels.csv")
    table = _table(source)
    _columns(table, source, "image", "mos")
    return _frame(table["image"], table["mos"])


# ----------------------------------------------------------------------------- video sets


def _lsvq(which: str) -> Callable[[Path], pd.DataFrame]:
    def read(root: Path) -> pd.DataFrame:
        source = root / f"LSVQ_whole_{which}.csv"
        table = _table(source)
        _columns(table, source, "name", "mos")
        split = "train" if which == "train" else "test"
        return _frame(table["name"].astype(str) + ".mp4", table["mos"], split)

    return read


def read_konvid1k(root: Path) -> pd.DataFrame:
    source = _first_existing(root, "KoNViD_1k_attributes.csv", "KoNViD_1k_mos.csv")
    table = _table(source)
    if "file_name" in table and "MOS" in table:
        names, mos = table["file_name"].astype(str), table["MOS"]
    else:
        _columns(table, source, "flickr_id", "mos")
        names, mos = table["flickr_id"].astype(str) + ".mp4", table["mos"]
    names = [n if Path(n).suffix else n + ".mp4" for n in names]
    return _frame(["KoNViD_1k_videos/" + n for n in names], mos)


def read_live_vqc(root: Path) -> pd.DataFrame:
    data = _mat(root / "data.mat")
    if "video_list" not in data or "mos" not in data:
        raise LabelFileError(f"{root / 'data.mat'}: expected variables 'video_list' and 'mos'")
    names = _mat_strings(data["video_list"])
    return _frame(["Video/" + n for n in names], np.asarray(data["mos"], float).ravel())


def read_youtube_ugc(root: Path) -> pd.DataFrame:
    source = _first_existing(root, "original_videos_MOS_for_YouTube_UGC_dataset.xlsx", "youtube_ugc_mos.csv")
    table = _table(source)
    _columns(table, source, "vid")
    score = next((c for c in table.columns if str(c).replace(" ", "").lower() == "mosfull"), None)
    if score is None:
        raise LabelFileError(f"{source}: no 'MOS full' column; found {list(table.columns)}")
    videos = {p.name.split("_crf")[0].split(".")[0]: p.relative_to(root).as_posix()
              for p in root.rglob("*") if p.suffix.lower() in (".mp4", ".mkv", ".webm")}
    vids = table["vid"].astype(str)
    return _frame([videos.get(v, f"original_videos/{v}.mkv") for v in vids], table[score])


ADAPTERS = {a.name: a for a in (
    Adapter("kadid10k", "image", True, "dmos.csv (dist_img, ref_img, dmos, var); images/", read_kadid10k,
            "Scored 1-5 with higher better despite the column name 'dmos'. Split by reference: 6,125/2,000/2,000."),
    Adapter("koniq10k", "image", True,
            "koniq10k_distributions_sets.csv (with the official 'set') or koniq10k_scores_and_distributions.csv; "
            "1024x768/", read_koniq10k),
    Adapter("spaq", "image", True, "Annotations/MOS and Image attribute scores.xlsx; TestImage/ or Dataset/TestImage/",
            read_spaq),
    Adapter("live_challenge", "image", True,
            "Data/AllImages_release.mat, Data/AllMOS_release.mat; Images/", read_live_challenge,
            "The 7 rater-training images listed first in the release are dropped (1,162 remain)."),
    Adapter("bid", "image", True, "DatabaseGrades.xlsx/.xls; ImageDatabase/DatabaseImageNNNN.JPG", read_bid,
            "Exact column names not confirmed: the first column containing 'number' and the first containing "
            "'grade' or 'score' are used; image names are assumed DatabaseImageNNNN.JPG."),
    Adapter("agiqa3k", "image", True, "data.csv (name, mos_quality, std_quality, ...); images in AGIQA-3K/ or root",
            read_agiqa3k),
    Adapter("pipal", "image", True, "Train_Label/*.txt ('image,elo' lines); Distortion_1..4/", read_pipal,
            "Elo-like scores of the public training part; the test labels were never released."),
    Adapter("tid2013", "image", True, "mos_with_names.txt ('MOS name' lines); distorted_images/", read_tid2013),
    Adapter("csiq", "image", False, "csiq_label.txt ('image dmos' lines); dst_imgs/<type>/", read_csiq,
            "The authors ship csiq.DMOS.xlsx; this reads the widely used two-column export of it, csiq_label.txt."),
    Adapter("live", "image", False, "dmos.mat (dmos, orgs), refnames_all.mat; jp2k/ jpeg/ wn/ gblur/ fastfading/",
            read_live, "LIVE release 2; reference images (orgs == 1) are dropped, 779 remain."),
    Adapter("liu13", "image", True, "mos.csv (image, mos)", read_two_column,
            "The published layout of the Liu et al. 2013 deblurring set is not known to us: export it as mos.csv."),
    Adapter("sriqa_bench", "image", True, "mos.csv (image, mos)", read_two_column,
            "The published layout of SRIQA-Bench is not known to us: export it as mos.csv."),
    Adapter("lsvq_train", "video", True, "LSVQ_whole_train.csv (name, mos, ...); <name>.mp4", _lsvq("train")),
    Adapter("lsvq_test", "video", True, "LSVQ_whole_test.csv; <name>.mp4", _lsvq("test")),
    Adapter("lsvq_1080p", "video", True, "LSVQ_whole_test_1080p.csv; <name>.mp4", _lsvq("test_1080p")),
    Adapter("konvid1k", "video", True, "KoNViD_1k_attributes.csv (file_name, MOS) or KoNViD_1k_mos.csv "
            "(flickr_id, mos); KoNViD_1k_videos/", read_konvid1k),
    Adapter("live_vqc", "video", True, "data.mat (video_list, mos); Video/", read_live_vqc),
    Adapter("youtube_ugc", "video", True, "original_videos_MOS_for_YouTube_UGC_dataset.xlsx (vid, MOS full); "
            "videos anywhere under the root, matched by vid", read_youtube_ugc,
            "Video file names differ between the original (.mkv) and transcoded (.mp4) releases: files are "
            "matched by the vid prefix; unmatched ones point at original_videos/<vid>.mkv."),
)}


def normalise_mos(raw: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Min-max over the set onto [1, 5]; lower-is-better scores are flipped first. raw [N] -> [N]."""
    raw = np.asarray(raw, dtype=float)
    score = raw if higher_is_better else -raw
    low, high = np.nanmin(score), np.nanmax(score)
    if high == low:
        return np.full_like(score, 3.0)
    return 1.0 + 4.0 * (score - low) / (high - low)


def build_frame(name: str, root: str | Path) -> pd.DataFrame:
    """The manifest rows of one dataset: path (relative to root), mos on [1, 5], mos_raw, dataset, split, kind."""
    try:
        adapter = ADAPTERS[name]
    except KeyError:
        raise LabelFileError(f"unknown dataset {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None
    root = Path(root)
    if not root.is_dir():
        raise LabelFileError(f"dataset root not found: {root}")
    frame = adapter.read(root)
    bad = frame["mos_raw"].isna()
    if bad.any():
        raise LabelFileError(f"{name} under {root}: {int(bad.sum())} labels are not numbers "
                             f"(first: {frame.loc[bad, 'path'].iloc[0]})")
    frame["mos"] = normalise_mos(frame["mos_raw"].to_numpy(), adapter.higher_is_better)
    frame["dataset"], frame["kind"] = name, adapter.kind
    return frame

