"""vLLM's CPU build against the transformers backend, in the real training loop on the same model.

    .venv-vllm/bin/python benchmarks/vllm_cpu.py [--steps 12] [--warmup-steps 200]

Builds the tiny Qwen2.5-VL with 2 text heads of 64 (vLLM's CPU attention wants head_dim >= 64), warms it
up on the answer format, then runs `launch/grpo.py --config configs/local.yaml` for `--steps` steps with
`rollout.backend` hf and then vllm (one rollout actor, one learner rank, the same seed, data, G, lengths
and threads), and prints the median of each phase from step 3 on, generation tokens per second and the
ratio. Runs in the environment `make vllm-env` builds (.venv-vllm), where both backends are installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

from training_runs import step_medians, train  # beside this script

ROOT = Path(__file__).resolve().parent.parent

PHASES = ("time/generate", "time/reward", "time/learn", "time/sync", "time/step")


def build_model(folder: Path, warmup_steps: int) -> Path:
    import torch

    from models import tiny_model
    from qadata.generated import generate
    from qadata.manifest import items, read_manifest
    from qadata.media import load_image

    manifest = ROOT / "artifacts" / "data" / "generated" / "manifest.parquet"  # the default data set
    if not manifest.is_file():
        generate(manifest.parent)
    if not (folder / "warmup.done").is_file():
        torch.set_num_threads(2)
        tiny_model.build(folder, tiny_model.TinyModelSpec(heads=2))
        images = [load_image(i.path) for i in items(read_manifest(manifest), "train")]
        tiny_model.warm_up(folder, images, steps=warmup_steps, log_every=0)
        (folder / "warmup.done").write_text("1")
    return manifest


def run(backend: str, model: Path, manifest: Path, steps: int, out: Path) -> dict[str, float]:
    args = [f"model.path={model}", f"data.train_manifest={manifest}", f"trainer.steps={steps}",
            f"run.name=vllm-cpu-{backend}", "data.eval_limit=8", "trainer.eval_every=1000", "health.min_scored=0",
            f"rollout.backend={backend}", "rollout.vllm.kv_cache_bytes=1073741824", "rollout.vllm.max_model_len=1024",
            "rollout.vllm.enforce_eager=true"]
    run_ = train(args, out / backend, out / f"{backend}.log", env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    metrics = step_medians(run_, (*PHASES, "learner/tokens"), from_step=3)
    metrics["tokens_per_s"] = metrics["learner/tokens"] / metrics["time/generate"]
    return metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup-steps", type=int, default=200)
    args = p.parse_args()
    model = ROOT / "artifacts" / "models" / "qwen2.5-vl-tiny-heads64"
    manifest = build_model(model, args.warmup_steps)
    with tempfile.TemporaryDirectory(prefix="preresq-vllm-cpu-") as folder:
        out = Path(folder)
        results = {backend: run(backend, model, manifest, args.steps, out) for backend in ("hf", "vllm")}
    print(f"\n{platform.machine()}, {os.cpu_count()} cores; {args.steps} steps of 8 images x G 6 at most 64 new "
          "tokens, median of steps 3 on (seconds)\n")
    print("| backend | generate | reward | learn | sync | step | answer tokens / step | generation tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for backend, m in results.items():
        print(f"| {backend} | {m['time/generate']:.2f} | {m['time/reward']:.3f} | {m['time/learn']:.2f} | "
              f"{m['time/sync']:.3f} | {m['time/step']:.2f} | {m['learner/tokens']:.0f} | {m['tokens_per_s']:.0f} |")
    hf, vllm = results["hf"], results["vllm"]
    print(f"\nvLLM / transformers: generation tokens/s x{vllm['tokens_per_s'] / hf['tokens_per_s']:.2f}, "
          f"step time x{vllm['time/step'] / hf['time/step']:.2f}")


if __name__ == "__main__":
    main()
