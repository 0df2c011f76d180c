"""The transformers rollout backend and one GRPO update on an accelerator, against the CPU, one run.

    python benchmarks/hf_backend_device.py [--model artifacts/models/qwen2.5-vl-tiny] [--steps 3]

Needs torch and transformers only (no Ray, DeepSpeed or vLLM), so it runs on a bare GPU machine.
Per device and dtype: seconds to generate a step's answers (8 images x G 6, 64 new tokens), the
largest gap between the sampling log-probs and a fresh forward of the same model, and seconds for
one policy-gradient update (forward + GRPO loss + backward + AdamW) on those answers.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from actors.grpo_objective import grpo_loss
from models.sequences import completion_logprobs
from qadata.media import load_image
from rewards.answer_format import chat_messages
from rollouts.backend import RolloutRequest, SamplingSettings
from rollouts.hf_backend import HFRolloutBackend


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(model: str, images: list, device: str, dtype: str, steps: int) -> dict:
    # The config's model and rollout sections, spelled out: the GPU machine has no OmegaConf stack.
    backend = HFRolloutBackend(SimpleNamespace(path=model, dtype=dtype, min_pixels=None, max_pixels=None),
                               SimpleNamespace(device=device, prompt_chunk=8))
    requests = [RolloutRequest(str(i), [im], chat_messages("iqa", 1), "iqa") for i, im in enumerate(images)]
    sampling = SamplingSettings(n=6, temperature=0.6, top_p=1.0, top_k=0, max_new_tokens=64, seed=0,
                                greedy=False)
    backend.generate(requests[:2], sampling)  # warm-up (kernels, allocator)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        answers = backend.generate(requests, sampling)
    sync(device)
    generate_s = (time.perf_counter() - start) / steps

    flat = [(r, c) for r, row in zip(requests, answers) for c in row]
    prompts = backend.processor.encode([r.messages for r, _ in flat], [r.images for r, _ in flat])
    prompts = {k: v.to(device) for k, v in prompts.items()}
    completions = [c.token_ids for _, c in flat]
    model_ = backend.model
    with torch.no_grad():
        fresh, _, mask = completion_logprobs(model_, prompts, completions, backend.processor.pad_id, 0.6)
    width = fresh.shape[1]
    sampled = torch.zeros_like(fresh)
    for row, (_, c) in enumerate(flat):
        sampled[row, : len(c.logprobs)] = torch.tensor(c.logprobs[:width])
    gap = float(((fresh - sampled).abs() * mask).max())

    model_.train()
    optimizer = torch.optim.AdamW(model_.parameters(), lr=1e-5)
    advantages = torch.randn(len(flat), device=device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        logprobs, _, mask = completion_logprobs(model_, prompts, completions, backend.processor.pad_id, 0.6)
        loss, _ = grpo_loss(logprobs, sampled.detach(), None, advantages, mask, clip_low=0.2,
                            clip_high=0.2, kl_coef=0.0, kl_estimator="k3", aggregation="seq-mean-token-mean")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    sync(device)
    learn_s = (time.perf_counter() - start) / steps
    tokens = sum(len(c) for c in completions)
    return {"generate_s": generate_s, "learn_s": learn_s, "logprob_gap": gap, "answers": len(flat), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="artifacts/models/qwen2.5-vl-tiny")
    parser.add_argument("--images", default="artifacts/data/generated/images")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    images = [load_image(p) for p in sorted(Path(args.images).glob("*.png"))[:8]]
    runs = [("cpu", "float32")]
    if torch.cuda.is_available():
        runs += [("cuda", "float32"), ("cuda", "bfloat16")]
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} CPU threads")
    results = {}
    for device, dtype in runs:
        torch.manual_seed(0)
        r = results[(device, dtype)] = measure(args.model, images, device, dtype, args.steps)
        print(f"{device:4s} {dtype:8s} generate {r['generate_s']:.3f} s/step ({r['answers']} answers, "
              f"{r['tokens']} tokens), learn {r['learn_s']:.3f} s/step, max |sampling - fresh| log-prob "
              f"{r['logprob_gap']:.2e}", flush=True)
    base = results[("cpu", "float32")]
    for key, r in results.items():
        if key != ("cpu", "float32"):
            print(f"{key[0]} {key[1]} vs cpu float32: generate {base['generate_s'] / r['generate_s']:.2f}x, "
                  f"learn {base['learn_s'] / r['learn_s']:.2f}x")


if __name__ == "__main__":
    main()
