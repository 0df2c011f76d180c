"""Evaluate a quality model on labelled sets: SRCC / PLCC / KRCC / MAE per dataset, tables, plots, JSON.

    python launch/evaluate.py --model artifacts/run/policy --config configs/local.yaml \
        --manifest artifacts/data/generated/manifest.parquet --split test
    python launch/evaluate.py --model PATH --manifest koniq.parquet --manifest spaq.parquet --samples 6

Decoding, actor and video options default to the run config's (configs/base.yaml, or --config on top).

The model (any local Qwen2.5-VL folder, or a preresq run folder with `policy/`) answers through the
rollout actors, as in training; on a Ray cluster (RAY_ADDRESS, `ray job submit`) `--num-actors`
spreads the sets over it. Writes results.md / results.csv / predictions.json / scatter.png /
errors.png to --output-dir and logs them to MLflow unless --no-tracking.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from evaluation.brisque_baseline import brisque_score, brisque_to_mos_scale
from evaluation.eval_report import (
    METRICS,
    error_plot,
    markdown_table,
    published_comparison,
    results_frame,
    scatter_plot,
)
from evaluation.prediction import ItemPrediction, predict, start_scorers
from evaluation.quality_metrics import quality_metrics
from evaluation.readout import describe
from evaluation.scoring_args import add_scoring_args, scoring_config
from evaluation.validation import set_metrics
from launch.environment_record import environment_record, write_record
from launch.trainer.config import flatten
from launch.trainer.tracking import Tracker
from models.processor import resolve_model
from qadata.manifest import Item, ManifestError, items, read_manifest
from qadata.media import MediaError, load_image
from qadata.requests import media_request
from qadata.video import VideoSettings
from rewards.answer_format import TASK_OF_KIND
from rollouts.backend import SamplingSettings


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scoring_args(p)
    p.add_argument("--manifest", action="append", required=True, help="a manifest (Parquet); repeat for several")
    p.add_argument("--split", default="all", help="split to evaluate in every manifest ('all': every row)")
    p.add_argument("--limit", type=int, default=None, help="at most this many items per dataset")
    p.add_argument("--by", default=None, help="also report per value of this manifest column (e.g. distortion)")
    p.add_argument("--baseline", default="brisque", choices=["brisque", "none"], help="classical baseline row")
    p.add_argument("--output-dir", default="artifacts/eval")
    p.add_argument("--name", default=None, help="the method's name in the tables (default: model folder name)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: MLFLOW_TRACKING_URI or sqlite)")
    p.add_argument("--experiment", default="preresq-eval")
    args = p.parse_args(argv)
    args.cfg = scoring_config(p, args)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    return args


def load_sets(manifests: list[str], split: str, limit: int | None,
              by: str | None = None) -> tuple[dict[str, list[Item]], dict[str, str]]:
    """dataset name -> its items, over every manifest (one kind per dataset); and, with `by`, each
    item's value of that manifest column (item id -> value)."""
    sets: dict[str, list[Item]] = {}
    groups: dict[str, str] = {}
    for path in manifests:
        frame = read_manifest(path)
        if by is not None and by not in frame.columns:
            raise ManifestError(f"{path}: no column {by!r} for --by (columns: {', '.join(frame.columns)})")
        for item in items(frame, split, path):
            sets.setdefault(item.dataset, []).append(item)
            if by is not None:
                groups[item.item_id] = str(frame.at[int(item.item_id.rsplit(":", 1)[1]), by])
    for name, members in sets.items():
        kinds = {i.kind for i in members}
        if len(kinds) > 1:
            raise ManifestError(f"dataset {name!r} mixes kinds {sorted(kinds)}: split it into one dataset per kind")
    return {name: members[:limit] for name, members in sets.items()}, groups


def brisque_chunk(paths: list[str]) -> list[float | None]:
    """BRISQUE of each image; None where it cannot be read (the model's rows name the error)."""
    out = []
    for path in paths:
        try:
            out.append(brisque_score(load_image(path)))
        except MediaError:
            out.append(None)
    return out


def brisque_scores(members: list[Item], chunk: int = 32) -> np.ndarray:
    """BRISQUE of each image item [N] (NaN: unreadable), as Ray tasks over chunks (spread over a cluster)."""
    task = ray.remote(num_cpus=1)(brisque_chunk)
    paths = [i.path for i in members]
    futures = [task.remote(paths[s : s + chunk]) for s in range(0, len(paths), chunk)]
    return np.array([np.nan if v is None else v for part in ray.get(futures) for v in part])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        model = resolve_model(args.model)
        args.cfg.model.path = str(model)
        sets, groups = load_sets(args.manifest, args.split, args.limit, args.by)
    except (FileNotFoundError, ManifestError) as error:
        raise SystemExit(f"preresq evaluate: {error}") from None
    method = args.name or (model.parent.name if model.name == "policy" else model.name)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = args.cfg
    rollouts = start_scorers(cfg)
    environment = write_record(environment_record(flatten(cfg), model), out_dir)
    sampling = SamplingSettings.evaluation(cfg.eval, cfg.rollout, cfg.run.seed)
    video = VideoSettings(**cfg.video)
    started = time.time()

    rows, group_rows, records, plotted, ours = [], [], [], {}, {}
    for name, members in sets.items():
        task = TASK_OF_KIND[members[0].kind]
        predictions = predict(
            rollouts, members, lambda i, task=task: media_request(i.item_id, i.path, i.kind, task, video),
            lambda i: i.item_id, task, sampling, cfg.eval.batch_size, desc=f"{name} ({len(members)} items)",
        )
        mos = np.array([i.mos for i in members])
        brisque = brisque_scores(members) if args.baseline == "brisque" and task == "iqa" else None
        parts = {"": np.arange(len(members))}
        if args.by:
            labels = np.array([groups[i.item_id] for i in members])
            parts.update({value: np.flatnonzero(labels == value) for value in sorted(set(labels))})
        for part, index in parts.items():
            target = group_rows if part else rows
            label = {"dataset": name, **({args.by: part} if part else {})}
            part_metrics = set_metrics([predictions[k] for k in index], mos[index])
            target.append({"method": method, **label, **part_metrics})
            if not part:
                metrics = ours[name] = part_metrics
            if brisque is not None:
                target.append({"method": "BRISQUE", **label, **brisque_metrics(brisque[index], mos[index])})
        scored = [(p.score, i.mos) for p, i in zip(predictions, members) if p.score is not None]
        plotted[name] = (np.array([s for s, _ in scored]), np.array([m for _, m in scored]))
        records.extend(item_record(name, item, p, None if brisque is None else brisque[k])
                       for k, (item, p) in enumerate(zip(members, predictions)))
        print(f"{name}: SRCC {fmt(metrics['srcc'])} PLCC {fmt(metrics['plcc'])} "
              f"({int(metrics['scored'])}/{int(metrics['items'])} scored, {int(metrics['parse_failures'])} "
              f"answers unparsed, {int(metrics['unreadable'])} unreadable)", flush=True)

    table = results_frame(rows)
    comparison, sources = published_comparison(ours, method)
    decoding = describe(cfg.eval, cfg.rollout.temperature)
    by_table = pd.DataFrame(group_rows) if group_rows else None
    files = write_outputs(out_dir, table, by_table, comparison, sources, records, plotted, method, decoding, args)
    summary = {"method": method, "model": str(model), "decoding": decoding, "seconds": time.time() - started,
               "results": table.replace({np.nan: None}).to_dict(orient="records"), "files": [str(f) for f in files]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if not args.no_tracking:
        log_to_mlflow(args, method, table, files + [out_dir / "summary.json", environment])
    print(markdown_table(table))
    print(f"\nwrote {', '.join(f.name for f in files)} to {out_dir}")
    ray.shutdown()
    return summary


def brisque_metrics(values: np.ndarray, mos: np.ndarray) -> dict:
    """BRISQUE's row: values [N] (NaN where the image was unreadable), mos [N]."""
    keep = np.isfinite(values)
    # Lower BRISQUE is better: correlations use its negation; MAE uses a fixed map onto [1, 5].
    metrics = quality_metrics(-values[keep], mos[keep])
    if keep.any():
        metrics["mae"] = float(np.mean(np.abs(np.array([brisque_to_mos_scale(v) for v in values[keep]]) - mos[keep])))
    return {**metrics, "items": float(len(values)), "scored": float(keep.sum()), "parse_failures": 0.0,
            "unparsed_items": 0.0, "unreadable": float((~keep).sum())}


def item_record(dataset: str, item: Item, p: ItemPrediction, brisque: float | None) -> dict:
    brisque = None if brisque is None or not np.isfinite(brisque) else float(brisque)
    return {"dataset": dataset, "path": item.path, "mos": item.mos, **p.to_dict(), "brisque": brisque}


def write_outputs(out_dir: Path, table, by_table, comparison: str, sources: list[str], records: list[dict],
                  plotted: dict, method: str, decoding: str, args) -> list[Path]:
    csv = out_dir / "results.csv"
    table.to_csv(csv, index=False)
    md = out_dir / "results.md"
    text = [f"# Evaluation of {method}", "", f"Decoding: {decoding}; split: {args.split}; seed {args.cfg.run.seed}.",
            "PLCC is given raw and after the 4-parameter logistic fit (the fit may fall, so that PLCC is >= 0 even "
            "for a reversed predictor: read it beside SRCC); undefined means a constant side or < 3 items.",
            "BRISQUE: correlations of its negated score (lower is better); MAE after a fixed map 0..100 -> 5..1.",
            "", markdown_table(table)]
    written = [md, csv]
    if by_table is not None:
        by_csv = out_dir / f"results_by_{args.by}.csv"
        by_table.to_csv(by_csv, index=False)
        written.append(by_csv)
        columns = ("method", "dataset", args.by, *METRICS, "items")
        text += ["", f"## By {args.by}", "", markdown_table(by_table, columns)]
    if comparison:
        text += ["", "## Beside published results (PLCC/SRCC)", "", comparison, "", "Sources:"]
        text += [f"- {s}" for s in sources]
    md.write_text("\n".join(text) + "\n")
    predictions = out_dir / "predictions.json"
    predictions.write_text(json.dumps(records, indent=1))
    scatter = scatter_plot(plotted, out_dir / "scatter.png", f"{method}: predicted score vs MOS ({decoding})")
    errors = error_plot(plotted, out_dir / "errors.png", f"{method}: score error per dataset ({decoding})")
    return [*written, predictions, scatter, errors]


def log_to_mlflow(args, method: str, table, files: list[Path]) -> None:
    e = args.cfg.eval
    params = {"model": args.model, "manifests": ",".join(args.manifest), "split": args.split,
              "readout": e.readout, "samples": e.samples, "temperature": args.cfg.rollout.temperature,
              "seed": args.cfg.run.seed, "config": args.config or "configs/base.yaml"}
    t = args.cfg.tracking
    tracker = Tracker(True, args.tracking_uri, args.experiment, f"eval-{method}", params, t.queue_metrics, t.timeout_s,
                      unsent_path=Path(args.output_dir) / "mlflow-unsent.jsonl")
    metrics = {}
    for _, row in table.iterrows():
        prefix = re.sub(r"[^\w\-./ ]", "_", f"{row['method']}/{row['dataset']}")
        for key in ("srcc", "plcc", "plcc_logistic", "krcc", "mae", "scored", "parse_failures", "unreadable"):
            if row[key] is not None and np.isfinite(row[key]):
                metrics[f"{prefix}/{key}"] = float(row[key])
    tracker.log_metrics(metrics, 0)
    for path in files:
        tracker.log_artifact(str(path))
    tracker.finish()


def fmt(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
