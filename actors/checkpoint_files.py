"""What a learner rank wrote into a checkpoint, hashed where it was written.

On a cluster the ranks write on their own nodes; the controller commits a checkpoint only when it sees every
file the ranks report (launch/trainer/checkpoint.py), so a folder that the nodes do not share is a named error
instead of a checkpoint without learner state. Each file is hashed once, by the rank that wrote it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

RANK_SHARD = re.compile(r"zero_pp_rank_(\d+)_")  # DeepSpeed's per-rank files: optimizer (and ZeRO-3 model) shards


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def written_by(rank: int, folder: str | Path) -> dict[str, dict]:
    """{path relative to `folder`: {"sha256", "bytes"}} of the files of `rank`'s DeepSpeed checkpoint there: its own
    shards, and for rank 0 every file no rank is named in (ZeRO-0..2's model states, `latest`, DeepSpeed's scripts)."""
    folder = Path(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        shard = RANK_SHARD.search(path.name)
        if path.is_file() and ((shard is not None and int(shard[1]) == rank) or (shard is None and rank == 0)):
            files[str(path.relative_to(folder))] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return files
