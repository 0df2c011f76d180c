"""LoRA against full fine-tuning on the learner: bytes by kind, peak RSS, step time and sync bytes, one run.

    python benchmarks/lora_memory.py                     # a 124M-parameter random Qwen2.5-VL, 4 steps each, ~4 min
    python benchmarks/lora_memory.py --steps 3 --rank 8

Each mode is one learner rank (actors/learner.py, DeepSpeed ZeRO-2 over gloo, float32 on CPU: configs/local.yaml)
in a process of its own, so its peak RSS is its own: full fine-tuning (every weight trained, a frozen reference
copy for the KL term) and LoRA (learner.lora.rank on base.yaml's targets: every language linear layer and the
vision attention; the reference is the policy with its adapters off). Each takes --steps GRPO steps on one image
with G 6 answers of 32 tokens; step time is the median from the second step on. Bytes by kind come from the
tensors (LearnerRank.bytes_by_kind); sync bytes are what one weight sync moves: the merged full weights in
model.dtype on every path, and, for comparison, what an adapter-only update would move (not built). Results:
--out (results.md, results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = dict(hidden=768, layers=12, heads=12, kv_heads=4, intermediate=2048, vision_hidden=256, vision_depth=4,
            vision_heads=4, model_vocab=32000, image_side=112)
KINDS = ("trainable_params", "frozen_params", "gradients", "optimizer_state", "reference_model")


def build_model(folder: Path) -> Path:
    from models import tiny_model

    if not (folder / "config.json").exists():
        tiny_model.build(folder, tiny_model.TinyModelSpec(**SPEC))
    return folder


def one_mode(model: Path, rank: int, steps: int) -> dict:
    """In this process: a learner rank (LoRA `rank`, 0 = full fine-tuning) for `steps` steps."""
    import time

    from PIL import Image

    from actors.learner import LearnerRank, LearnerSettings, TrainSample
    from actors.lora import adapter_state
    from launch.trainer.config import load_config
    from rewards.answer_format import chat_messages

    cfg = load_config(str(ROOT / "configs" / "local.yaml"), [
        f"model.path={model}", "trainer.batch_size=1", "rollout.group_size=6", "learner.micro_batch=6",
        "learner.threads=2", "algorithm.kl_coef=0.05", f"learner.lora.rank={rank}"])
    learner = LearnerRank(LearnerSettings.from_config(cfg), 0, 1)
    learner.setup("127.0.0.1", 29800 + rank)
    image = Image.new("RGB", (112, 112), (120, 60, 30))
    tokens = learner.processor.tokenizer("<think>" + "soft " * 30 + "</think>")["input_ids"][:32]
    samples = [TrainSample([image], chat_messages("iqa", 1), tokens, a, [0.0] * len(tokens), 0)
               for a in (1.0, -1.0, 0.5, -0.5, 0.25, -0.25)]
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        learner.train_step(samples, learner.settings.lr)
        seconds.append(time.perf_counter() - start)
    weights = learner.full_weights()
    sync = sum(t.numel() * t.element_size() for t in weights.values())
    adapters = sum(t.numel() * t.element_size() for t in adapter_state(learner.engine.module).values()) if rank else 0
    params = sum(p.numel() for p in learner.engine.module.parameters())
    return {"lora_rank": rank, "parameters": params, "bytes": learner.bytes_by_kind(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "step_s": statistics.median(seconds[1:] or seconds), "steps": steps,
            "sync_bytes_merged": sync, "sync_bytes_adapters_only": adapters}


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def learned(result: dict) -> int:
    """Bytes that exist because weights are trained: the trainable parameters, their gradients, Adam's state."""
    return sum(result["bytes"][kind] for kind in ("trainable_params", "gradients", "optimizer_state"))


def report(results: list[dict]) -> str:
    full, lora = results
    rows = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; float32 on CPU, "
            f"ZeRO-2, one rank; {full['parameters'] / 1e6:.1f}M parameters; {full['steps']} steps of 6 answers x "
            "32 tokens on one 112-pixel image.", "",
            f"| MiB | full fine-tuning | LoRA rank {lora['lora_rank']} |", "|---|---|---|"]
    for kind in KINDS:
        rows.append(f"| {kind.replace('_', ' ')} | {mib(full['bytes'][kind])} | {mib(lora['bytes'][kind])} |")
    rows += [f"| peak RSS (whole process) | {mib(full['peak_rss_bytes'])} | {mib(lora['peak_rss_bytes'])} |",
             f"| sync, merged full weights | {mib(full['sync_bytes_merged'])} | {mib(lora['sync_bytes_merged'])} |",
             f"| sync, adapters only (not built) | - | {mib(lora['sync_bytes_adapters_only'])} |",
             f"| step (s, median) | {full['step_s']:.2f} | {lora['step_s']:.2f} |", "",
             f"LoRA / full: step time {lora['step_s'] / full['step_s']:.2f}, peak RSS "
             f"{lora['peak_rss_bytes'] / full['peak_rss_bytes']:.2f}, trainable + gradients + optimizer state "
             f"{learned(lora) / learned(full):.3f}."]
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rank", type=int, default=16, help="the LoRA rank")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "lora-memory"))
    p.add_argument("--model", default=None, help="a model folder (default: a random one built under --out)")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: one mode, JSON on stdout
    args = p.parse_args()
    out = Path(args.out)
    model = Path(args.model) if args.model else build_model(out / "model")
    if args.one is not None:
        print("RESULT " + json.dumps(one_mode(model, args.one, args.steps)), flush=True)
        return
    results = []
    for rank in (0, args.rank):
        with tempfile.TemporaryDirectory() as scratch:
            child = subprocess.run([sys.executable, __file__, "--one", str(rank), "--steps", str(args.steps),
                                    "--out", str(out), "--model", str(model)], capture_output=True, text=True,
                                   cwd=scratch, env={**os.environ, "DS_ACCELERATOR": "cpu"})
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not lines:
            raise SystemExit(f"lora_memory: the rank-{rank} run failed:\n{child.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
        print(f"rank {rank}: done", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = report(results)
    (out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
