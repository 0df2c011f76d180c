"""What `evaluate.py` writes: the results table (Markdown + CSV), the published comparison, the plots."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure  # figures without pyplot: no GUI backend, safe in any thread

from evaluation.quality_metrics import fit_logistic4, logistic4, mean_defined

PUBLISHED = Path(__file__).with_name("published_results.yaml")
METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "mae")
COUNTS = ("items", "scored", "parse_failures", "unparsed_items", "unreadable")
HEADERS = {"srcc": "SRCC", "plcc": "PLCC (raw)", "plcc_logistic": "PLCC (4-par. logistic)", "krcc": "KRCC",
           "mae": "MAE [1-5]", "items": "items", "scored": "scored", "parse_failures": "unparsed answers",
           "unparsed_items": "unparsed items", "unreadable": "unreadable media"}


def safe_text(text: str | None) -> str:
    """Model text as a table cell (a CSV, a sample table): a leading = + - @ (a formula to a spreadsheet the table
    is opened in) is quoted with an apostrophe."""
    text = text or ""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """rows: {"method", "dataset", metrics..., counts...} -> the table with an average row per method.

    The average of a metric is over the datasets where it is defined (undefined stays out, never NaN).
    """
    frame = pd.DataFrame(rows, columns=["method", "dataset", *METRICS, *COUNTS])
    averages = []
    for method, group in frame.groupby("method", sort=False):
        average = {"method": method, "dataset": "average"}
        average.update({m: mean_defined(group[m].tolist()) for m in METRICS})
        average.update({c: group[c].sum() for c in COUNTS})
        averages.append(average)
    return pd.concat([frame, pd.DataFrame(averages)], ignore_index=True)


def _cell(value, metric: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "undefined" if metric in METRICS else ""
    return f"{value:.3f}" if metric in METRICS else f"{int(value)}"


def markdown_table(frame: pd.DataFrame, columns=("method", "dataset", *METRICS, *COUNTS)) -> str:
    head = "| " + " | ".join(HEADERS.get(c, c) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, rule]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], c) if c in HEADERS else str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def dataset_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def published_comparison(ours: dict[str, dict], method: str) -> tuple[str, list[str]]:
    """A Markdown table PLCC / SRCC: our run beside the published peers, for the datasets in common.

    ours: dataset name -> metrics. Returns the table ("" when no dataset is in common) and the sources.
    """
    published = yaml.safe_load(PUBLISHED.read_text())
    canonical = {}
    for key, entry in published["datasets"].items():
        for alias in [key, *entry.get("aliases", [])]:
            canonical[alias] = key
    common = {canonical[dataset_key(name)]: name for name in ours if dataset_key(name) in canonical}
    if not common:
        return "", []
    keys = sorted(common)
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "|".join("---" for _ in keys) + "|"]

    def pair(plcc, srcc) -> str:
        return "/".join("n/a" if v is None else f"{v:.3f}" for v in (plcc, srcc))

    sources = []
    for model, entry in published["models"].items():
        results = entry["results"]
        if not any(k in results for k in keys):
            continue
        lines.append(f"| {model} | " + " | ".join(pair(*results[k]) if k in results else "—" for k in keys) + " |")
        sources.append(f"{model}: {entry['source']}")
    lines.append(f"| **{method}** (this run) | "
                 + " | ".join(pair(ours[common[k]].get("plcc"), ours[common[k]].get("srcc")) for k in keys) + " |")
    return "\n".join(lines), sources


def _wrap(title: str, fig) -> str:
    return textwrap.fill(title, width=int(fig.get_figwidth() * 11))


def _grid(count: int) -> tuple:
    cols = min(4, count)
    rows = int(np.ceil(count / cols))
    fig = Figure(figsize=(3.6 * cols, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.axis("off")
    return fig, axes.ravel()


def scatter_plot(sets: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Predicted score vs MOS per dataset, with the fitted logistic curve. sets: name -> (pred [N], mos [N])."""
    fig, axes = _grid(max(1, len(sets)))
    for ax, (name, (x, y)) in zip(axes, sets.items()):
        ax.scatter(x, y, s=8, alpha=0.5)
        params = fit_logistic4(x, y)
        if params is not None:
            grid = np.linspace(x.min(), x.max(), 100)
            ax.plot(grid, logistic4(grid, *params), color="C1", label="4-parameter logistic")
            ax.legend(fontsize=7)
        ax.plot([1, 5], [1, 5], color="grey", linewidth=0.5, linestyle="--")
        ax.set(xlabel="predicted score", ylabel="MOS [1-5]", title=f"{name} (n={len(x)})")
    fig.suptitle(_wrap(title, fig), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def error_plot(sets: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Distribution of the score error (prediction - MOS, [1, 5] scale) per dataset: the calibration view."""
    fig = Figure(figsize=(max(4.0, 1.4 * len(sets) + 2), 3.6))
    ax = fig.subplots()
    names = [n for n, (x, _) in sets.items() if len(x)]
    errors = [sets[n][0] - sets[n][1] for n in names]
    if errors:
        ax.violinplot(errors, showmedians=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_ylabel("prediction - MOS")
    ax.set_title(_wrap(title, fig), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
