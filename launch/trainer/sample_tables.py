"""Answers next to their pictures: a table at every validation (the same items each time, so answers can be
compared over steps) and every `tracking.samples_every` training steps. Each goes to MLflow as a table its UI
renders (`samples/validation.json`, `samples/training.json`, a row per answer, thumbnails as pictures) and to
`<run.output_dir>/samples/` (rows as JSON lines, thumbnails as PNG, and an HTML page to open in a browser), also
when tracking is off. `tracking.samples_every: 0` makes none: no picture leaves the machine.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.eval_report import safe_text
from rewards.answer_format import read_scores, reasoning

KINDS = ("training", "validation")


@dataclass(frozen=True)
class TableLimits:
    """tracking.sample_items, tracking.sample_answers, tracking.thumbnail_px."""

    items: int
    answers: int
    thumbnail_px: int


def thumbnail(picture, side: int):
    """A copy of a PIL picture whose longest side is at most `side` pixels."""
    small = picture.convert("RGB")
    small.thumbnail((side, side))
    return small


def scores_text(text: str, task: str) -> str:
    scores = read_scores(text, task)
    return "unparsed" if scores is None else " ".join(f"{s:.2f}" for s in scores)


def training_rows(step: int, requests: list, answers: list, mos: list[float], kept: list[int], rewards,
                  advantages: np.ndarray, limits: TableLimits) -> list[dict]:
    """Rows of a step's first `limits.items` answered items, `limits.answers` answers each: the picture (a clip's
    frame grid), MOS, the answer's reasoning, scores and full text, every reward term, the advantage, and the
    weights version that wrote it. `rewards` (BatchRewards) covers the `kept` items; `advantages` [B, G] all."""
    rows = []
    for position, index in enumerate(kept[: limits.items]):
        request, picture = requests[index], thumbnail(requests[index].images[0], limits.thumbnail_px)
        for k, answer in enumerate(answers[index][: limits.answers]):
            rows.append({"step": step, "weights_version": step - 1, "item": request.item_id, "picture": picture,
                         "mos": round(float(mos[index]), 3), "answer": k,
                         "reasoning": safe_text(reasoning(answer.text)),
                         "scores": scores_text(answer.text, request.task),
                         "prediction": round(float(rewards.predictions[position, k]), 3),
                         "advantage": round(float(advantages[index, k]), 4),
                         **{f"reward/{name}": round(float(value[position, k]), 4)
                            for name, value in sorted(rewards.terms.items())},
                         "text": safe_text(answer.text)})
    return rows


def validation_rows(step: int, requests: list, mos: list[float], predictions: list,
                    limits: TableLimits) -> list[dict]:
    """Rows of the fixed validation items: the picture, MOS, the readout's prediction and the answer it read."""
    rows = []
    for request, target, p in zip(requests, mos, predictions):
        text = p.answers[0] if p.answers else ""
        rows.append({"step": step, "weights_version": step, "item": request.item_id,
                     "picture": thumbnail(request.images[0], limits.thumbnail_px), "mos": round(float(target), 3),
                     "prediction": None if p.score is None else round(p.score, 3),
                     "aspects": " ".join(f"{a:.2f}" for a in p.aspects) if p.aspects else "unparsed",
                     "reasoning": safe_text(p.reasoning), "text": safe_text(text)})
    return rows


def fixed_items(items: list, count: int) -> list:
    """`count` validation items spread over the MOS range (the same ones at every validation of a run)."""
    if count <= 0 or not items:
        return []
    ordered = sorted(items, key=lambda item: (item.mos, item.item_id))
    picks = np.unique(np.linspace(0, len(ordered) - 1, min(count, len(ordered))).round().astype(int))
    return [ordered[i] for i in picks]


class SampleTables:
    """Writes the tables of a run: `folder` (<run.output_dir>/samples), `tracker` (launch/trainer/tracking),
    `eval_items` the validation set (its fixed items are picked from it)."""

    def __init__(self, folder: Path, tracker, limits: TableLimits, every: int, eval_items: list):
        self.folder, self.tracker, self.limits, self.every = Path(folder), tracker, limits, every
        self.validation_items = {item.item_id for item in fixed_items(eval_items, limits.items)} if every else set()

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def training(self, step: int, requests: list, answers: list, mos: list[float], kept: list[int], rewards,
                 advantages: np.ndarray) -> None:
        """A training step's table, every `tracking.samples_every` steps (see `training_rows`)."""
        if self.due(step):
            self.write("training", step, training_rows(step, requests, answers, mos, kept, rewards, advantages,
                                                       self.limits))

    def validation(self, step: int, items: list, predictions: list, load) -> None:
        """The fixed validation items' table; `predictions` are in `items`' order, load(item) gives its request."""
        if not self.enabled:
            return
        picked = [(item, p) for item, p in zip(items, predictions)
                  if item.item_id in self.validation_items and p.error is None]
        self.write("validation", step, validation_rows(step, [load(item) for item, _ in picked],
                                                       [item.mos for item, _ in picked], [p for _, p in picked],
                                                       self.limits))

    def write(self, kind: str, step: int, rows: list[dict]) -> None:
        """Rows to the run folder (JSON lines, PNG thumbnails, the HTML page) and to MLflow's `samples/<kind>.json`.
        A step redone after a relaunch or a resume (logged before) is not written again."""
        if not rows or step <= self.tracker.logged_until:
            return
        pictures = self.folder / "pictures"
        pictures.mkdir(parents=True, exist_ok=True)
        saved = {}
        for row in rows:
            key = id(row["picture"])
            if key not in saved:
                saved[key] = f"pictures/{kind}-{step:06d}-{len(saved)}.png"
                row["picture"].save(self.folder / saved[key])
        with open(self.folder / f"{kind}.jsonl", "a") as handle:
            for row in rows:
                handle.write(json.dumps({**row, "picture": saved[id(row["picture"])]}) + "\n")
        self._page(kind)
        self.tracker.log_table({column: [row[column] for row in rows] for column in rows[0]},
                               f"samples/{kind}.json", step)

    def _page(self, kind: str) -> None:
        """samples/<kind>.html: every row so far, newest step first, pictures inline."""
        lines = [json.loads(line) for line in (self.folder / f"{kind}.jsonl").read_text().splitlines()]
        lines.sort(key=lambda row: -row["step"])
        columns = list(lines[0])
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for row in lines:
            cells = []
            for column in columns:
                value = row.get(column)
                if column == "picture":
                    cells.append(f'<td><img src="{html.escape(str(value))}"></td>')
                else:
                    cells.append(f"<td>{html.escape('' if value is None else str(value))}</td>")
            body.append(f"<tr>{''.join(cells)}</tr>")
        page = ("<!doctype html><meta charset='utf-8'><title>preresq " + kind + " samples</title>"
                "<style>td{vertical-align:top;font:12px sans-serif;white-space:pre-wrap;max-width:30em}"
                "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px}</style>"
                f"<table><tr>{head}</tr>{''.join(body)}</table>")
        (self.folder / f"{kind}.html").write_text(page)
