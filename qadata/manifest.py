"""The manifest: one Parquet row per labelled item, the format every dataset is turned into.

Columns: path (str; relative paths are relative to the manifest's folder), mos (float on [1, 5]),
dataset (str), split (str), kind ("image" | "video"). Extra columns (mos_raw, reference,
distortion, level, ...) are kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REQUIRED = {"path": "string", "mos": "number", "dataset": "string", "split": "string", "kind": "string"}
KINDS = ("image", "video")
MOS_RANGE = (1.0, 5.0)


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class Item:
    """One labelled item; `path` is absolute."""

    item_id: str
    path: str
    mos: float
    dataset: str
    kind: str


def validate(frame: pd.DataFrame, source: str) -> None:
    """Raise ManifestError naming the file, row and column of the first problem."""
    for column in REQUIRED:
        if column not in frame.columns:
            raise ManifestError(f"{source}: missing column {column!r} (required: {', '.join(REQUIRED)})")
    mos = pd.to_numeric(frame["mos"], errors="coerce")
    checks = (
        ("mos", mos.isna(), "is not a number"),
        ("mos", (mos < MOS_RANGE[0]) | (mos > MOS_RANGE[1]),
         f"is outside [{MOS_RANGE[0]}, {MOS_RANGE[1]}] (normalise MOS per dataset first)"),
        ("kind", ~frame["kind"].isin(KINDS), f"is not one of {KINDS}"),
    )
    for column, bad, problem in checks:
        if bad.any():
            row = frame.index[bad][0]
            value = frame.at[row, column]
            shown = repr(value) if isinstance(value, str) else value
            raise ManifestError(f"{source}: row {row}, column {column!r}: {shown} {problem}")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The validated manifest with `path` made absolute."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    frame = pd.read_parquet(path)
    validate(frame, str(path))
    root = path.resolve().parent
    frame["path"] = [str(p) if Path(p).is_absolute() else str(root / p) for p in frame["path"]]
    return frame.reset_index(drop=True)


def write_manifest(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    validate(frame, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def items(frame: pd.DataFrame, split: str, source: str = "manifest") -> list[Item]:
    """The items of one split ("all": every row), in manifest order; an empty split is an error naming it."""
    chosen = frame if split == "all" else frame[frame["split"] == split]
    if chosen.empty:
        raise ManifestError(f"{source}: no rows with split {split!r} (splits: {sorted(frame['split'].unique())})")
    return [
        Item(item_id=f"{row.dataset}:{index}", path=row.path, mos=float(row.mos), dataset=row.dataset, kind=row.kind)
        for index, row in chosen.iterrows()
    ]


def merge_manifests(paths: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Several manifests as one at `out` (item ids `dataset:row` of the merged table cannot collide; paths
    relative to `out`'s folder). A media file listed twice, in one manifest or two, is refused with both places
    named, and so is one in the training split of one and another split of the other (a test image trained on)."""
    frames = []
    for path in paths:
        frame = read_manifest(path)
        frames.append(frame.assign(_source=[f"{path} row {i}" for i in range(len(frame))]))
    merged = pd.concat(frames, ignore_index=True)
    resolved = [str(Path(p).resolve()) for p in merged["path"]]
    first: dict[str, int] = {}
    for index, key in enumerate(resolved):
        if key in first:
            a, b = merged.loc[first[key]], merged.loc[index]
            overlap = " (a train/test overlap)" if a["split"] != b["split"] else ""
            raise ManifestError(f"{key} is listed twice{overlap}: {a['_source']} (split {a['split']}) and "
                                f"{b['_source']} (split {b['split']}); remove one before merging")
        first[key] = index
    root = Path(out).resolve().parent
    merged["path"] = [os.path.relpath(p, root) for p in resolved]
    return merged.drop(columns="_source")
