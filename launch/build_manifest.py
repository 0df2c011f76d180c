"""Build a manifest from a dataset's published label files and its media folder.

    python launch/build_manifest.py --dataset kadid10k --root /data/kadid10k
    python launch/build_manifest.py --dataset konvid1k --root /data/KoNViD_1k --out /data/manifests/konvid.parquet
    python launch/build_manifest.py --list            # the datasets and the files each one reads
    python launch/build_manifest.py --merge /data/kadid10k/manifest.parquet /data/koniq/manifest.parquet \
        --out /data/manifests/kadid+koniq.parquet     # several datasets in one run (weights: data.mix)

MOS is normalised per dataset to [1, 5] (DMOS flipped), the raw score kept as `mos_raw`. Every
media file is checked (a progress bar); missing ones are left out of the manifest and listed in
`<manifest>.missing.txt`, so nothing is lost silently. --merge joins manifests into one (a media file listed
twice, or in two splits, is refused by name).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tqdm import tqdm

from qadata.adapters import ADAPTERS, LabelFileError, build_frame
from qadata.manifest import ManifestError, merge_manifests, write_manifest


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(ADAPTERS), help="which dataset's layout to read")
    p.add_argument("--root", help="the dataset's folder, as downloaded")
    p.add_argument("--out", help="manifest path (default: ROOT/manifest.parquet)")
    p.add_argument("--no-media-check", action="store_true", help="keep rows whose media file is missing")
    p.add_argument("--list", action="store_true", help="list the datasets and the label files they read")
    p.add_argument("--merge", nargs="+", metavar="MANIFEST", help="join these manifests into --out")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, p)
    if args.list:
        for name, adapter in sorted(ADAPTERS.items()):
            print(f"{name:15s} {adapter.kind:5s} {adapter.files}" + (f"\n{'':21s}note: {adapter.caveat}"
                                                                       if adapter.caveat else ""))
        return {}
    if not args.dataset or not args.root:
        p.error("--dataset and --root are required (or --list)")
    try:
        frame = build_frame(args.dataset, args.root)
    except LabelFileError as error:
        raise SystemExit(f"preresq build_manifest: {error}") from None
    root = Path(args.root).resolve()
    out = Path(args.out) if args.out else root / "manifest.parquet"
    absolute = [root / p for p in frame["path"]]
    present = [path.is_file() for path in tqdm(absolute, desc=f"checking {args.dataset} media", unit="file")]
    missing = [str(a) for a, ok in zip(absolute, present) if not ok]
    if missing and not args.no_media_check:
        frame = frame[present].reset_index(drop=True)
        absolute = [a for a, ok in zip(absolute, present) if ok]
        listing = out.with_name(out.name + ".missing.txt")
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("\n".join(missing) + "\n")
        print(f"{len(missing)} media files missing (left out, listed in {listing}); first: {missing[0]}")
    # Paths relative to the manifest's folder, so the folder pair can move together.
    frame["path"] = [os.path.relpath(a, out.resolve().parent) for a in absolute]
    write_manifest(frame, out)
    counts = frame["split"].value_counts().to_dict()
    print(f"{out}: {len(frame)} {ADAPTERS[args.dataset].kind}s of {args.dataset}, splits {counts}, "
          f"raw MOS {frame['mos_raw'].min():.3g}..{frame['mos_raw'].max():.3g} -> [1, 5]")
    return {"manifest": str(out), "rows": len(frame), "missing": len(missing), "splits": counts}


def merge(paths: list[str], out: str | None, parser: argparse.ArgumentParser) -> dict:
    if not out:
        parser.error("--merge needs --out, the merged manifest's path")
    try:
        frame = merge_manifests(paths, out)
    except (ManifestError, FileNotFoundError) as error:
        raise SystemExit(f"preresq build_manifest: {error}") from None
    write_manifest(frame, out)
    counts = frame.groupby(["dataset", "split"]).size().to_dict()
    print(f"{out}: {len(frame)} items of {frame['dataset'].nunique()} datasets from {len(paths)} manifests; "
          + ", ".join(f"{d} {s} {n}" for (d, s), n in sorted(counts.items())))
    return {"manifest": str(out), "rows": len(frame), "datasets": sorted(frame["dataset"].unique())}


if __name__ == "__main__":
    main()
