"""Checkpoints you can trust: committed whole or not at all, and loaded only when they are what was written.

Layout: <root>/step-000020/{deepspeed/<tag>/..., trainer_state.json, manifest.json}, and <root>/latest
naming the newest. The controller keeps two stores: `<output_dir>/checkpoints` (resume) and
`<output_dir>/healthy` (the health guard's snapshots).

Commit: everything is written into a fresh `.tmp-*` folder, hashed into `manifest.json`, fsync'd, then
renamed to a name no folder has (`step-000020`, or `step-000020.1` when that step was saved before), and
only then does `latest` move (write, fsync, rename). At no moment is there no loadable checkpoint, and a
failed write (a full disk) leaves the previous one and `latest` as they were.

Loading: `latest` must name a `step-*` folder directly inside the store (no path, no symlink), and every
file in it must be listed in its manifest with the same SHA-256 and nothing else may be there; DeepSpeed
unpickles what it loads, so a planted or changed file would run code on every learner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

from actors.calls import RoleError
from actors.checkpoint_files import file_sha256

NAME = re.compile(r"step-(\d{6})(?:\.(\d+))?")
MANIFEST = "manifest.json"
LEARNER = "deepspeed"  # the learner group's DeepSpeed checkpoint, inside a checkpoint folder
STATE = "trainer_state.json"


class CheckpointError(RuntimeError):
    """A checkpoint that could not be written, or one refused at load; names the path."""


def fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def tree_files(folder: Path) -> list[Path]:
    """Every file under `folder`, relative; a symlink anywhere is refused."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise CheckpointError(f"{path}: a symlink inside a checkpoint is refused")
        if path.is_file():
            files.append(path.relative_to(folder))
        elif not path.is_dir():
            raise CheckpointError(f"{path}: not a regular file")
    return files


def write_manifest(folder: Path, reported: dict[str, dict] | None = None) -> None:
    """manifest.json of every file in `folder`. `reported`: {relative path: {"sha256", "bytes"}} of the files the
    learner ranks wrote and hashed where they wrote them; each must be here at its size (else CheckpointError: the
    folder is not one every node sees), and is not hashed again. The rest is hashed here."""
    present = tree_files(folder)
    missing = sorted(set(reported or {}) - {str(rel) for rel in present})
    if missing:
        raise CheckpointError(
            f"{folder / missing[0]} (and {len(missing) - 1} more), which a learner rank wrote, is not in the folder "
            "the controller sees: run.output_dir must be a folder every node sees (a shared volume mounted at the "
            "same path on each), or the checkpoint holds no learner state")
    entries = {}
    for rel in present:
        entry, size = (reported or {}).get(str(rel)), (folder / rel).stat().st_size
        if entry is not None and size != entry["bytes"]:
            raise CheckpointError(f"{folder / rel} is {size} bytes here but the learner rank wrote {entry['bytes']}: "
                                  "run.output_dir is not one folder every node sees alike")
        entries[str(rel)] = entry or {"sha256": file_sha256(folder / rel), "bytes": size}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1, sort_keys=True))


def verify(folder: Path) -> None:
    """Every file in `folder` is in its manifest with the hash written at commit, and nothing else is there."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise CheckpointError(f"{manifest_path} is missing: {folder} was not committed by preresq (or by an older "
                              "version); refusing to load it")
    try:
        listed = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path} is unreadable ({error}); refusing to load {folder}") from None
    present = {str(rel) for rel in tree_files(folder)} - {MANIFEST}
    for extra in sorted(present - set(listed)):
        raise CheckpointError(f"{folder / extra} is not in {manifest_path}: a file was added after the commit; "
                              "refusing to load the checkpoint")
    for rel, entry in sorted(listed.items()):
        path = folder / rel
        if rel not in present:
            raise CheckpointError(f"{path}, listed in {manifest_path}, is missing; refusing to load the checkpoint")
        if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{path} differs from the hash in {manifest_path}: it changed after the commit; "
                                  "refusing to load the checkpoint")


class CheckpointStore:
    """Committed checkpoints of one kind under `root`, the newest `keep` of them kept."""

    def __init__(self, root: str | Path, keep: int, label: str = "checkpoint"):
        self.root = Path(root)
        self.keep = max(1, keep)
        self.label = label

    def entries(self) -> list[tuple[int, int, Path]]:
        """(step, revision, folder) of every committed folder, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = NAME.fullmatch(path.name)
            if match and path.is_dir() and not path.is_symlink() and (path / MANIFEST).is_file():
                found.append((int(match[1]), int(match[2] or 0), path))
        return sorted(found)

    def steps(self) -> list[int]:
        return sorted({step for step, _, _ in self.entries()})

    def folder(self, step: int) -> Path:
        """The newest committed folder of `step` (its plain name when there is none)."""
        matching = [path for s, _, path in self.entries() if s == step]
        return matching[-1] if matching else self.root / f"step-{step:06d}"

    def save(self, step: int, write_learner, state: dict, also_keep: int | None = None) -> Path:
        """write_learner(folder): the learner group's DeepSpeed checkpoint into `folder`; it returns the files the
        ranks wrote ({path relative to `folder`: {"sha256", "bytes"}}, or None). Returns the new folder. The
        checkpoint of step `also_keep` (older) is kept beside the newest `keep`."""
        tmp = self.root / f".tmp-step-{step:06d}-{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".tmp-*"):  # from a process killed mid-write
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
            reported = write_learner(str(tmp / LEARNER)) or {}
            (tmp / STATE).write_text(json.dumps(state))
            write_manifest(tmp, {f"{LEARNER}/{rel}": entry for rel, entry in reported.items()})
            for path in [*(tmp / rel for rel in tree_files(tmp)), *sorted(p for p in tmp.rglob("*") if p.is_dir()),
                         tmp]:
                fsync_path(path)
            final = self._free_name(step)
            os.rename(tmp, final)
            fsync_path(self.root)
            pointer = self.root / "latest.tmp"
            pointer.write_text(final.name)
            fsync_path(pointer)
            os.replace(pointer, self.root / "latest")
            fsync_path(self.root)
        except Exception as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(error, (CheckpointError, RoleError)):  # already names what is wrong
                raise
            previous = self.root / "latest"
            kept = f"{self.root / previous.read_text().strip()} is intact" if previous.is_file() else "there is none"
            raise CheckpointError(
                f"could not write the {self.label} of step {step} into {self.root} ({type(error).__name__}: {error}); "
                f"the previous one ({kept}). Free disk space or fix the folder's permissions, then rerun the same "
                "command: it resumes from the newest checkpoint."
            ) from error
        self._prune(step, final, also_keep)
        return final

    def _free_name(self, step: int) -> Path:
        final, revision = self.root / f"step-{step:06d}", 0
        while final.exists() or final.is_symlink():
            revision += 1
            final = self.root / f"step-{step:06d}.{revision}"
        return final

    def _prune(self, step: int, written: Path, also_keep: int | None) -> None:
        """Keep what was just written, the newest keep - 1 older steps and `also_keep`'s. A folder of a later step,
        or an earlier commit of this one, is from a trajectory this run left (a rollback, a resume) and goes."""
        kept = self.folder(also_keep) if also_keep is not None and also_keep < step else written
        others = [(s, r, p) for s, r, p in self.entries() if p not in (written, kept)]
        older = [p for s, _, p in others if s < step]
        for path in [p for s, _, p in others if s >= step] + older[: max(0, len(older) - (self.keep - 1))]:
            shutil.rmtree(path, ignore_errors=True)

    def latest(self) -> Path | None:
        """The folder `latest` names, verified; None when nothing was committed. CheckpointError if refused."""
        pointer = self.root / "latest"
        if pointer.is_symlink():
            raise CheckpointError(f"{pointer} is a symlink; refusing to follow it")
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        if not NAME.fullmatch(name):
            raise CheckpointError(f"{pointer} names {name!r}, not a step-NNNNNN folder inside {self.root}; refusing it")
        folder = self.root / name
        if folder.is_symlink() or not folder.is_dir():
            raise CheckpointError(f"{pointer} names {folder}, which is not a folder inside {self.root}; refusing it")
        verify(folder)
        return folder

    def state(self, step: int) -> dict:
        return read_state(self.folder(step))

    def before(self, step: int) -> int | None:
        """The newest step at or before `step`, else the oldest kept (None if there are none)."""
        steps = self.steps()
        older = [s for s in steps if s <= step]
        return older[-1] if older else (steps[0] if steps else None)

    def drop_after(self, step: int) -> None:
        for s, _, path in self.entries():
            if s > step:
                shutil.rmtree(path, ignore_errors=True)


def read_state(folder: Path) -> dict:
    return json.loads((folder / STATE).read_text())
