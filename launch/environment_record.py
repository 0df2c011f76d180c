"""What a result was made with, written beside it (`environment.json`) and into MLflow: package versions, the
model folder's fingerprint, the code's git revision and whether it had uncommitted changes, the command line, the
Ray cluster's resources and the resolved config. Enough to tell two runs' set-ups apart, or to redo one."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("preresq", "torch", "transformers", "tokenizers", "ray", "deepspeed", "vllm", "mlflow", "numpy",
            "omegaconf", "av", "decord")
SMALL_FILE_BYTES = 1 << 20  # files up to this size are hashed whole (configs, tokenizer); larger ones by size


def model_fingerprint(folder: str | Path) -> dict:
    """SHA-256 over every file's relative path and size, and the contents of the small ones (config, tokenizer,
    processor): a changed config or another checkpoint shows; hashing the weights themselves (GBs) at every start
    would cost minutes, so two folders that differ only inside same-sized weight files look alike."""
    folder = Path(folder)
    digest, files, total = hashlib.sha256(), 0, 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder)}\0{size}\0".encode())
        if size <= SMALL_FILE_BYTES:
            digest.update(path.read_bytes())
        files, total = files + 1, total + size
    return {"path": str(folder), "sha256": digest.hexdigest(), "files": files, "bytes": total}


def git_state() -> dict:
    """The revision of the code that ran and whether it had uncommitted changes (None where there is no git
    checkout, e.g. a `ray job submit` upload, which leaves .git out)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {"revision": revision, "dirty": None if status is None else bool(status)}


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return {"python": platform.python_version(), **found}


def ray_resources() -> dict | None:
    """The cluster's total resources and its live nodes, when this process is connected to Ray."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    return {"resources": ray.cluster_resources(), "nodes": sum(1 for n in ray.nodes() if n["Alive"])}


def environment_record(config: dict, model_path: str | Path) -> dict:
    """config: the resolved config (flattened); model_path: the model folder the run loaded."""
    return {"packages": versions(), "model": model_fingerprint(model_path), "git": git_state(),
            "command": [sys.executable, *sys.argv], "ray": ray_resources(),
            "platform": {"system": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()},
            "config": config}


def write_record(record: dict, folder: Path) -> Path:
    """`folder/environment.json`, whole or not at all."""
    path = folder / "environment.json"
    partial = folder / ".environment.json.tmp"
    partial.write_text(json.dumps(record, indent=2, default=str))
    os.replace(partial, path)
    return path
