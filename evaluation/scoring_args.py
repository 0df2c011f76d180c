"""The command-line options that evaluate.py and score.py share: the model, decoding, actors, video.

Their defaults are the run config's (configs/base.yaml, or the --config file on top of it): each option
below sets one config key, and an option left out keeps the key's value. So `--config configs/local.yaml`
scores with the settings `make train` trained with.
"""

from __future__ import annotations

import argparse

from launch.trainer.config import CHOICES, ConfigError, load_config

# option (argparse dest) -> (config key, type, help)
OPTION_KEYS = {
    "readout": ("eval.readout", str, "greedy: one greedy answer; mean: the mean of --samples sampled answers, with "
                                     "their spread; expected: the greedy answer with each score's leading digit "
                                     "replaced by its expectation under the model (deterministic)"),
    "samples": ("eval.samples", int, "answers per item for --readout mean; n > 1 without --readout means "
                                     "--readout mean"),
    "temperature": ("rollout.temperature", float, "sampling temperature of --readout mean"),
    "seed": ("run.seed", int, "seeds the sampled answers"),
    "max_new_tokens": ("eval.max_new_tokens", int, "answer length limit"),
    "batch_size": ("eval.batch_size", int, "items per rollout call"),
    "num_actors": ("rollout.num_actors", int, "rollout actors (one GPU each unless --device cpu)"),
    "device": ("rollout.device", str, "cpu | cuda"),
    "dtype": ("model.dtype", str, "the weights' dtype"),
    "threads": ("rollout.threads", int, "torch threads per CPU actor"),
    "min_pixels": ("model.min_pixels", int, "per picture (unset: the model folder's setting)"),
    "max_pixels": ("model.max_pixels", int, "per picture, e.g. 1003520 = 1280 x 28 x 28"),
    "backend": ("rollout.backend", str, "rollout backend: transformers generate, or a vLLM engine per actor (the "
                                        ".venv-vllm environment)"),
    "kv_cache_bytes": ("rollout.vllm.kv_cache_bytes", int, "vLLM's KV cache per actor, in bytes (on CPU required, "
                                                           "never a share of RAM)"),
    "max_model_len": ("rollout.vllm.max_model_len", int, "vLLM: prompt (pictures included) + answer tokens"),
    "video_frames": ("video.global_frames", int, "frames in a clip's grid picture"),
    "video_columns": ("video.grid_columns", int, "columns of that grid"),
    "video_cell_scale": ("video.cell_scale", float, "packed frame size / frame size"),
    "video_local_frames": ("video.local_frames", int, "full-resolution frames"),
    "video_decoder": ("video.decoder", str, "the same pictures either way; pyav decodes about half as much on "
                                            "B-frame streams"),
}


def add_scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Qwen2.5-VL folder, or a preresq run folder holding policy/")
    p.add_argument("--config", help="the run config whose settings are the defaults below (base.yaml under it); "
                                    "e.g. configs/local.yaml")
    for dest, (key, kind, text) in OPTION_KEYS.items():
        p.add_argument(f"--{dest.replace('_', '-')}", dest=dest, type=kind, default=None, choices=CHOICES.get(key),
                       help=f"{text} (default: the config's {key})")


def scoring_config(p: argparse.ArgumentParser, args: argparse.Namespace):
    """The validated run config of a scoring command: --config, then each option given, then --model.

    A value out of range exits naming the option."""
    overrides = [f"{key}={getattr(args, dest)}" for dest, (key, _, _) in OPTION_KEYS.items()
                 if getattr(args, dest) is not None]
    if args.samples is not None and args.samples > 1 and args.readout is None:
        overrides.append("eval.readout=mean")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as error:
        message = str(error)
        for dest, (key, _, _) in OPTION_KEYS.items():
            message = message.replace(f"'{key}'", f"'{key}' (--{dest.replace('_', '-')})")
        p.error(message)
    cfg.model.path = args.model  # set, not parsed: a path may hold any character
    return cfg
