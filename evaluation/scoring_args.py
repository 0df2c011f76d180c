"""The command-line options that evaluate.py and score.py share: the model, decoding, actors, video."""

from __future__ import annotations

import argparse
import os

from qadata.video import VideoSettings


def add_scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Qwen2.5-VL folder, or a preresq run folder holding policy/")
    p.add_argument("--samples", type=int, default=1,
                   help="1: greedy decoding; n > 1: the mean of n sampled answers per item, with their spread")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature when --samples > 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16, help="items per rollout call")
    p.add_argument("--num-actors", type=int, default=1, help="rollout actors (one GPU each unless --device cpu)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 2), help="torch threads per CPU actor")
    p.add_argument("--min-pixels", type=int, default=None, help="per picture (default: the model folder's setting)")
    p.add_argument("--max-pixels", type=int, default=None, help="per picture, e.g. 1003520 = 1280 x 28 x 28")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                   help="rollout backend: transformers generate, or a vLLM engine per actor (the .venv-vllm environment)")
    p.add_argument("--kv-cache-bytes", type=int, default=1 << 30,
                   help="vLLM's KV cache per actor, in bytes (on CPU never a share of RAM); default 1 GiB")
    p.add_argument("--max-model-len", type=int, default=8192, help="vLLM: prompt (pictures included) + answer tokens")
    video = VideoSettings()
    p.add_argument("--video-frames", type=int, default=video.global_frames, help="frames in a clip's grid picture")
    p.add_argument("--video-columns", type=int, default=video.grid_columns, help="columns of that grid")
    p.add_argument("--video-cell-scale", type=float, default=video.cell_scale, help="packed frame size / frame size")
    p.add_argument("--video-local-frames", type=int, default=video.local_frames, help="full-resolution frames")
    p.add_argument("--video-decoder", default=video.decoder, choices=["pyav", "decord"],
                   help="the same pictures either way; pyav decodes about half as much on B-frame streams")


def vllm_settings(args: argparse.Namespace) -> dict | None:
    """The rollout actors' VLLMSettings fields for --backend vllm (None for hf)."""
    if args.backend != "vllm":
        return None
    return {"kv_cache_bytes": args.kv_cache_bytes, "max_model_len": args.max_model_len,
            "enforce_eager": args.device == "cpu"}


def check_scoring_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> VideoSettings:
    """Exit with the option named when a value is out of range; the clip settings otherwise."""
    for name in ("samples", "batch_size", "num_actors", "max_new_tokens", "threads", "max_model_len"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.temperature <= 0:
        p.error("--temperature must be positive")
    try:
        return VideoSettings(args.video_frames, args.video_columns, args.video_cell_scale, args.video_local_frames,
                             decoder=args.video_decoder)
    except ValueError as error:
        p.error(str(error).replace("video.", "--video setting "))
