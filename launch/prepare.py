"""Prepare the embedded defaults if they are missing: the generated data set and the tiny model
(built, then warmed up on the answer format). Idempotent: what exists is kept.

    python launch/prepare.py [--root artifacts] [--warmup-steps 600]
    python launch/prepare.py --benchmark-set     # also the generated image+video benchmark (~1 min)

The default training data stays the global-distortion set (qadata/generated.py): a tiny random
vision tower can learn those cues; the benchmark (qadata/benchmark_set.py) is for real models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from actors.notices import silence_known_notices
from models import tiny_model
from qadata.benchmark_set import generate_benchmark
from qadata.generated import generate
from qadata.manifest import items, read_manifest
from qadata.media import load_image


def prepare(root: str | Path = "artifacts", warmup_steps: int = 600, threads: int = 2,
            benchmark_set: bool = False) -> dict[str, Path]:
    root = Path(root)
    silence_known_notices()  # transformers' shard-writing and weight-loading bars
    torch.set_num_threads(threads)
    out = {}
    if benchmark_set:
        out["benchmark"] = root / "data" / "benchmark" / "manifest.parquet"
        if not out["benchmark"].is_file():
            generate_benchmark(out["benchmark"].parent)
    manifest = root / "data" / "generated" / "manifest.parquet"
    if not manifest.is_file():
        start = time.time()
        generate(manifest.parent)
        print(f"generated data set: {manifest} ({time.time() - start:.0f}s)", flush=True)
    model_dir = root / "models" / "qwen2.5-vl-tiny"
    done = model_dir / "warmup.json"
    if not done.is_file():
        tiny_model.build(model_dir)
        train = items(read_manifest(manifest), "train")
        images = [load_image(item.path) for item in train]
        print(f"warming up the tiny model on the answer format ({warmup_steps} steps)", flush=True)
        result = tiny_model.warm_up(model_dir, images, steps=warmup_steps)
        done.write_text(json.dumps(result, indent=2))
    return {"manifest": manifest, "model": model_dir, **out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="artifacts")
    parser.add_argument("--warmup-steps", type=int, default=600)
    parser.add_argument("--benchmark-set", action="store_true", help="also generate the image+video benchmark")
    args = parser.parse_args(argv)
    for name, path in prepare(args.root, args.warmup_steps, benchmark_set=args.benchmark_set).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
