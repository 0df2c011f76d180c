"""GPU smoke: a Qwen2.5-VL-shaped random model's rollout and one GRPO learner update on one device, one table.

    python benchmarks/hf_backend_device.py                       # Qwen2.5-VL-3B's shape, bf16, on cuda
    python benchmarks/hf_backend_device.py --shape tiny --device cpu --dtype float32   # what the test runs

Needs torch and transformers only (no Ray, DeepSpeed or vLLM), so it runs on a bare GPU machine. The model has
Qwen2.5-VL-3B-Instruct's shape (36 text layers of 2048, 32 vision blocks of 1280, a 151,936-row vocabulary) with
random weights and the tiny model's tokenizer; pictures are --image-side pixels square (448: 256 picture
tokens). It times the transformers rollout backend's sampler (each prompt's prefill once, its G answers on the
shared cache) and the learner's path (each prompt once, its answers on its cache, the GRPO loss, AdamW in the
model's dtype), and reports answer tokens/s, seconds, peak device memory per phase, and the largest gap between
the sampling log-probs and the learner's recomputation of them (bf16 kernels differ between the incremental
decode and the one-pass forward).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from actors.grpo_objective import grpo_loss
from models import tiny_model
from models.loading import DTYPES
from models.processor import QualityProcessor
from models.sequences import grouped_logprobs
from rewards.answer_format import chat_messages
from rollouts.backend import SamplingSettings
from rollouts.hf_backend import sample_group

SHAPES = {"3b": tiny_model.QWEN25_VL_3B, "tiny": tiny_model.TinyModelSpec()}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_bytes(device: str) -> int:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def random_model(spec, folder: str, device: str, dtype: str):
    """The processor files in `folder` and a random model of `spec` built on `device` in `dtype` (not saved)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = tiny_model.build_tokenizer(spec)
    tokenizer.save_pretrained(folder)
    tiny_model.build_image_processor(spec).save_pretrained(folder)
    config = tiny_model.model_config(spec, tokenizer)
    config.save_pretrained(folder)  # what the processor reads of the model
    torch.manual_seed(spec.seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=DTYPES[dtype])
    return model, QualityProcessor(folder)


def smoke(shape: str, device: str, dtype: str, images: int, group: int, new_tokens: int, steps: int) -> dict:
    spec = SHAPES[shape]
    with tempfile.TemporaryDirectory(prefix="preresq-smoke-") as folder:
        start = time.perf_counter()
        model, processor = random_model(spec, folder, device, dtype)
        built_s = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (spec.image_side, spec.image_side, 3), dtype=np.uint8))
                for _ in range(images)]
    prompts, first = ({k: v.to(device) for k, v in processor.encode([chat_messages("iqa", 1)] * len(some),
                                                                     [[p] for p in some]).items()}
                      for some in (pictures, pictures[:1]))
    sampling = SamplingSettings(n=group, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new_tokens, seed=0,
                                greedy=False, digit_logprobs=False)
    model.eval()
    with torch.no_grad():  # warm-up: kernels and the allocator
        sample_group(model, first, 2, sampling, processor)
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            tokens, sampled, lengths, _, _ = sample_group(model, prompts, group, sampling, processor)
    synchronize(device)
    rollout_s, rollout_peak = (time.perf_counter() - start) / steps, peak_bytes(device)

    rows = [i for i in range(images) for _ in range(group)]
    answers = [tokens[r, : int(n)].tolist() for r, n in enumerate(lengths)]
    with torch.no_grad():
        fresh, _, mask = grouped_logprobs(model, prompts, rows, answers, processor.pad_id, sampling.temperature)
    sampled = sampled[:, : fresh.shape[1]].to(fresh.device, fresh.dtype)
    gap = float(((fresh - sampled).abs() * mask).max())

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    advantages = torch.randn(len(answers), device=device)
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        logprobs, _, mask = grouped_logprobs(model, prompts, rows, answers, processor.pad_id, sampling.temperature)
        loss, _ = grpo_loss(logprobs, logprobs.detach(), None, advantages, mask, clip_low=0.2, clip_high=0.2,
                            kl_coef=0.0, kl_estimator="k3", aggregation="seq-mean-token-mean")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    learn_s, learn_peak = (time.perf_counter() - start) / steps, peak_bytes(device)
    answer_tokens = int(lengths.sum())
    return {"shape": shape, "device": device, "dtype": dtype, "parameters": parameters, "build_s": built_s,
            "answers": len(answers), "answer_tokens": answer_tokens,
            "prompt_tokens": int(prompts["input_ids"].numel()), "rollout_s": rollout_s,
            "rollout_tokens_per_s": answer_tokens / rollout_s, "rollout_peak_bytes": rollout_peak, "learn_s": learn_s,
            "learn_tokens_per_s": answer_tokens / learn_s, "learn_peak_bytes": learn_peak, "logprob_gap_max": gap,
            "loss": float(loss.detach())}


def table(r: dict) -> str:
    gib = 2.0 ** 30
    rows = [("model", f"{r['shape']} ({r['parameters'] / 1e6:,.1f} M parameters, random, built in "
                      f"{r['build_s']:.0f} s)"),
            ("device, dtype", f"{r['device']} ({device_name(r['device'])}), {r['dtype']}"),
            ("batch", f"{r['answers']} answers ({r['answer_tokens']} answer tokens, {r['prompt_tokens']} prompt "
                      "tokens)"),
            ("rollout", f"{r['rollout_s']:.2f} s, {r['rollout_tokens_per_s']:.0f} answer tokens/s, peak "
                        f"{r['rollout_peak_bytes'] / gib:.1f} GiB"),
            ("learner update", f"{r['learn_s']:.2f} s, {r['learn_tokens_per_s']:.0f} answer tokens/s, peak "
                               f"{r['learn_peak_bytes'] / gib:.1f} GiB (AdamW in {r['dtype']})"),
            ("largest log-prob gap, sampling vs learner", f"{r['logprob_gap_max']:.2e}")]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="3b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--group", type=int, default=6, help="G answers per picture")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="timed repeats of each phase")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: pass --device cpu (and --shape tiny --dtype float32)")
    print(f"torch {torch.__version__}, {platform.machine()}", flush=True)
    print(table(smoke(args.shape, args.device, args.dtype, args.images, args.group, args.new_tokens, args.steps)))


if __name__ == "__main__":
    main()
