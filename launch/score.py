"""Score your own images and videos with a trained model: a score on [1, 5], aspect scores, reasoning.

    python launch/score.py --model artifacts/run/policy --config configs/local.yaml photos/ clip.mp4 --output scores.csv
    python launch/score.py --model PATH --list paths.txt --output scores.jsonl --readout expected
    python launch/score.py --model PATH --list paths.txt --output scores.jsonl --samples 6   # --readout mean

Inputs are files, folders (searched recursively) and `--list` files of paths, one per line. Output is
CSV or JSONL by its extension, a row per file, appended a batch at a time: rerun the same command
after an interruption and files already in the output are skipped (`--retry-errors` re-scores those
that failed). A file that cannot be scored gets its error in the row; the rest goes on. Decoding, actor
and video options default to the run config's (configs/base.yaml, or --config on top).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

import ray

from evaluation.eval_report import safe_text
from evaluation.prediction import ItemPrediction, predict, start_scorers
from evaluation.scoring_args import add_scoring_args, scoring_config
from models.processor import resolve_model
from qadata.requests import media_request
from qadata.video import VideoSettings
from rewards.answer_format import IQA_ASPECTS, TASK_OF_KIND, VQA_SCORES
from rollouts.backend import SamplingSettings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".3gp"}
ASPECTS = {"iqa": IQA_ASPECTS, "vqa": VQA_SCORES}
COLUMNS = ["path", "kind", "score", "score_std", *IQA_ASPECTS, *VQA_SCORES, "answers", "parsed", "reasoning", "error"]


def kind_of(path: str) -> str | None:
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def collect(inputs: list[str], lists: list[str]) -> list[str]:
    """Every path to score, in a stable order, without repeats; folders are searched recursively."""
    paths: list[str] = []
    for listing in lists:
        text = Path(listing).read_text()
        paths.extend(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    for entry in inputs:
        folder = Path(entry)
        if folder.is_dir():
            found = sorted(p for p in folder.rglob("*")  # a dangling symlink too: its row says so
                           if (p.is_file() or p.is_symlink()) and not p.name.startswith("."))
            paths.extend(str(p) for p in found)
        else:
            paths.append(entry)
    seen: set[str] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


class ScoreFile:
    """The output file: CSV or JSONL, one row per path; rows are appended whole and flushed per batch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.format = {".csv": "csv", ".jsonl": "jsonl"}.get(self.path.suffix.lower())
        if self.format is None:
            raise ValueError(f"--output {self.path}: use a .csv or .jsonl file name")

    def read(self) -> list[dict]:
        """Rows already written. A torn last row (an interrupted write) is dropped from the file; a line that
        cannot be read is moved to `<output>.corrupt` with a warning, and the rows after it are kept."""
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as handle:  # newline="": a \r inside a quoted value stays in it
            text = handle.read()
        rows, bad = [], []
        if self.format == "jsonl":
            lines = text.split("\n")
            torn = lines.pop()  # "" after a final newline, else an interrupted write
            for line in lines:
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or "path" not in row:
                        raise ValueError("not a row")
                    rows.append(row)
                except ValueError:
                    bad.append(line)
        else:
            records = list(csv.reader(io.StringIO(text, newline="")))
            header, body = (records[0], records[1:]) if records else (COLUMNS, [])
            torn = "" if text.endswith("\n") or not body else body.pop()
            for record in body:
                if header != COLUMNS or len(record) != len(COLUMNS):
                    bad.append(",".join(record))
                else:
                    rows.append(dict(zip(COLUMNS, record)))
        if bad:
            with open(self.path.with_suffix(self.path.suffix + ".corrupt"), "a", newline="") as handle:
                handle.write("".join(line + "\n" for line in bad))
            print(f"warning: {len(bad)} unreadable rows of {self.path} moved to {self.path}.corrupt; their files "
                  "are scored again", flush=True)
        if bad or torn:
            self.rewrite(rows)
        return rows

    def rewrite(self, rows: list[dict]) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", newline="") as handle:
            handle.write(self._encode(rows, header=self.format == "csv"))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)

    def append(self, rows: list[dict]) -> None:
        header = self.format == "csv" and (not self.path.is_file() or self.path.stat().st_size == 0)
        with open(self.path, "a", newline="") as handle:
            handle.write(self._encode(rows, header))
            handle.flush()
            os.fsync(handle.fileno())

    def _encode(self, rows: list[dict], header: bool) -> str:
        if self.format == "jsonl":
            return "".join(json.dumps(row) + "\n" for row in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        # Values are quoted as needed; a line break inside one (a reasoning, an odd file name) stays in it. The
        # model's reasoning is text a spreadsheet could take for a formula.
        writer.writerows({k: "" if v is None else safe_text(str(v)) if k == "reasoning" else str(v)
                          for k, v in row.items()} for row in rows)
        return buffer.getvalue()


def row_of(path: str, kind: str | None, task: str | None, p: ItemPrediction) -> dict:
    row = {column: None for column in COLUMNS}
    row.update(path=path, kind=kind, score=p.score, score_std=p.score_std, answers=len(p.answers), parsed=p.parsed,
               reasoning=p.reasoning, error=p.error)
    if p.aspects is not None:
        row.update(zip(ASPECTS[task], p.aspects))
    if p.error is None and p.score is None:
        row["error"] = f"no parseable answer in {len(p.answers)} (see --readout, --samples, --max-new-tokens)"
    return row


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image or video files, or folders")
    add_scoring_args(p)
    p.add_argument("--list", action="append", default=[], help="a text file of paths, one per line")
    p.add_argument("--output", required=True, help="scores.csv or scores.jsonl (appended; reruns resume)")
    p.add_argument("--retry-errors", action="store_true", help="re-score files whose earlier row has an error")
    args = p.parse_args(argv)
    if not args.inputs and not args.list:
        p.error("give files or folders to score, or --list")
    args.cfg = scoring_config(p, args)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        model = resolve_model(args.model)
        args.cfg.model.path = str(model)
        output = ScoreFile(args.output)
        paths = collect(args.inputs, args.list)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"preresq score: {error}") from None
    previous = output.read()
    if args.retry_errors and any(r.get("error") for r in previous):
        previous = [r for r in previous if not r.get("error")]
        output.rewrite(previous)
    done = {r["path"] for r in previous}
    todo = [p for p in paths if p not in done]
    print(f"{len(paths)} files: {len(paths) - len(todo)} already in {output.path}, {len(todo)} to score", flush=True)

    rejected = {p for p in todo if kind_of(p) is None or not Path(p).is_file()}
    if rejected:
        output.append([row_of(p, kind_of(p), None, ItemPrediction(p, error=rejection(p)))
                       for p in todo if p in rejected])
    by_kind = {kind: [p for p in todo if p not in rejected and kind_of(p) == kind] for kind in ("image", "video")}
    if any(by_kind.values()):
        cfg = args.cfg
        rollouts = start_scorers(cfg)
        sampling = SamplingSettings.evaluation(cfg.eval, cfg.rollout, cfg.run.seed)
        video = VideoSettings(**cfg.video)
        for kind, members in by_kind.items():
            if not members:
                continue
            task = TASK_OF_KIND[kind]
            predict(rollouts, members, lambda path, kind=kind, task=task: media_request(path, path, kind, task, video),
                    lambda path: path, task, sampling, cfg.eval.batch_size, desc=f"scoring {len(members)} {kind}s",
                    on_chunk=lambda chunk, kind=kind, task=task: output.append(
                        [row_of(p.item_id, kind, task, p) for p in chunk]))
        ray.shutdown()
    rows = output.read()
    failed = sum(bool(r.get("error")) for r in rows)
    print(f"{output.path}: {len(rows)} rows, {failed} with an error", flush=True)
    return {"rows": len(rows), "errors": failed, "scored_now": len(todo)}


def rejection(path: str) -> str:
    if Path(path).is_symlink() and not Path(path).exists():
        return f"{path}: a symlink to {os.readlink(path)}, which does not exist"
    if not Path(path).exists():
        return f"{path}: no such file"
    if not Path(path).is_file():
        return f"{path}: not a file"
    kinds = f"images {sorted(IMAGE_SUFFIXES)}, videos {sorted(VIDEO_SUFFIXES)}"
    return f"{path}: unsupported file type {Path(path).suffix or '(none)'!r} ({kinds})"


if __name__ == "__main__":
    main()
