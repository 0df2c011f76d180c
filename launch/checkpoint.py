"""Checkpoints: written into a temporary folder, then renamed into place, so a crash never leaves a
half-written `step-N`. The `latest` file names the newest complete one and is replaced atomically.

Layout: <output_dir>/checkpoints/step-000020/{trainer_state.json, deepspeed/<tag>/...}
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def begin(output_dir: str | Path, step: int) -> Path:
    """A fresh temporary folder for the checkpoint of `step`."""
    tmp = checkpoint_root(output_dir) / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(output_dir: str | Path, tmp: Path, step: int, trainer_state: dict, keep: int) -> Path:
    """Write the trainer state, move `tmp` into place, point `latest` at it, prune old ones."""
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:06d}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = root / "latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / "latest")
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    root = checkpoint_root(output_dir)
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    if not (folder / "trainer_state.json").is_file():
        raise FileNotFoundError(f"checkpoint pointer {pointer} names {folder}, which has no trainer_state.json")
    return folder


def read_state(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())
