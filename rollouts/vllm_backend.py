"""Rollout backend on vLLM: one engine per rollout actor, G samples per prompt in one request.

Prompts are the model's chat template with one `<|image_pad|>` per picture, the pictures passed as
multimodal data (vLLM expands them); the four-picture video prompt is just a prompt with four
pictures. Log-probs are vLLM's *processed* log-probs (after temperature), the quantity the learner
recomputes, so their gap is meaningful. Every prompt is checked against the engine's context and
picture limits first (rollouts/prompt_budget.py) and fails or is skipped with its item named.

Weights arrive in one of two ways (`weight_sync`):
  object_store  the learner's gathered weights (a Ray object, Hugging Face names) are loaded in place
                with vLLM's `reload_weights` (in-process iterator, or safetensors in a temp folder
                when the engine runs in its own process); what the CPU test lane runs;
  nccl | ipc    vLLM's weight-transfer engine: the learner drives init/start/update/finish through
                this actor's methods (actors/weight_transfer.py) — NCCL broadcast between separate
                GPUs, CUDA IPC when colocated. No process group is made here beside vLLM's own.
Either way the prefix cache is reset after a sync, and a sync that does not finish within
`sync_timeout_s` raises instead of hanging. With `sleep` (colocated mode) the engine sleeps after
generating, and wakes its weights before a sync and its KV cache after it; which parts sleep is tracked
tag by tag, as vLLM does (a wake-up naming a tag that is awake wakes nothing at all there).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from models.processor import IMAGE_PAD, answer_token_ids, digit_token_ids, require_model_folder, token_starts
from rollouts.backend import Completion, RolloutRequest, SamplingSettings
from rollouts.prompt_budget import PromptLimits, budget_problem

WEIGHT_SYNCS = ("object_store", "nccl", "ipc")
ON_OVERSIZED = ("fail", "skip")  # a prompt over the engine's limits: the step fails, or the item is skipped


def call_with_timeout(what: str, timeout_s: float, function, *args, **kwargs):
    """function(*args, **kwargs), or TimeoutError naming `what` after timeout_s (the call is left behind)."""
    result: dict = {}

    def run():
        try:
            result["value"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = error

    worker = threading.Thread(target=run, daemon=True, name=what)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s (rollout.sync_timeout_s); "
                           "the engine is stuck: check the learner and rollout logs")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def kv_cache_arguments(settings, device: str) -> dict:
    """The engine's KV-cache sizing. On CPU always bytes: vLLM's CPU build reads a share as a share of
    NUMA node 0's memory minus its own RSS, which is negative on some machines of one kind."""
    if settings.kv_cache_bytes is not None:
        if settings.kv_cache_bytes < 1 << 20:
            raise ValueError(f"rollout.vllm.kv_cache_bytes is {settings.kv_cache_bytes}: give at least 1 MiB")
        return {"kv_cache_memory_bytes": int(settings.kv_cache_bytes),
                "gpu_memory_utilization": settings.gpu_memory_utilization}
    if device == "cpu":
        raise ValueError("rollout.vllm.kv_cache_bytes is not set: on CPU the KV cache is sized in bytes "
                         "(e.g. 1073741824 for 1 GiB), never as a share of the machine")
    return {"gpu_memory_utilization": settings.gpu_memory_utilization}


def engine_environment(settings) -> dict[str, str]:
    """Variables the engine must see before it starts (vLLM caches its environment at start-up). With ipc the
    update request carries CUDA IPC handles (tensor and storage classes, a dtype), which vLLM's msgpack channel
    to its engine process refuses unless it may fall back to pickle; that channel is local to the actor."""
    return {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"} if settings.weight_sync == "ipc" else {}


@contextmanager
def one_copy_per_node(folder: str) -> Iterator[None]:
    """Held while a full copy of the weights is written under `folder` and read back: the rollout actors of one
    node take turns (a lock file there), so its shared memory holds one copy at a time, not one per actor."""
    with open(Path(folder) / "preresq-weights.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _picture_settings(folder: Path, min_pixels: int | None, max_pixels: int | None) -> dict:
    """min/max pixels, patch and merge size from the folder's preprocessor_config.json (defaults of Qwen2.5-VL)."""
    path = folder / "preprocessor_config.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    size = saved.get("size") or {}
    return {
        "min_pixels": min_pixels or saved.get("min_pixels") or size.get("shortest_edge") or 56 * 56,
        "max_pixels": max_pixels or saved.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280,
        "patch": saved.get("patch_size", 14),
        "merge": saved.get("merge_size", 2),
    }


class VLLMRolloutBackend:
    """model, rollout: the config's sections (ModelConfig, RolloutConfig: its `vllm` settings and
    sync_timeout_s); seed: the engine's own seed, run.seed (each request is seeded as well)."""

    def __init__(self, model, rollout, seed: int):
        from transformers import AutoTokenizer
        from vllm import LLM

        folder = require_model_folder(model.path)
        dtype, device, min_pixels, max_pixels = model.dtype, rollout.device, model.min_pixels, model.max_pixels
        self.settings = settings = rollout.vllm
        self.sync_timeout_s = rollout.sync_timeout_s
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.eos_ids, self.vision_ids = answer_token_ids(self.tokenizer)
        self.image_pad_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        pictures = _picture_settings(folder, min_pixels, max_pixels)
        self.limits = PromptLimits(settings.max_model_len, settings.max_pictures, **pictures)
        kwargs = dict(model=str(folder), dtype=dtype, seed=seed, max_model_len=settings.max_model_len,
                      tensor_parallel_size=settings.tensor_parallel_size,
                      enforce_eager=settings.enforce_eager or device == "cpu",  # CUDA graphs: GPU only
                      enable_prefix_caching=True, logprobs_mode="processed_logprobs")
        if (folder / "preprocessor_config.json").is_file():  # a vision-language model
            kwargs["limit_mm_per_prompt"] = {"image": settings.max_pictures}
            kwargs["mm_processor_kwargs"] = {"min_pixels": pictures["min_pixels"],
                                             "max_pixels": pictures["max_pixels"]}
        kwargs.update(kv_cache_arguments(settings, device))
        if device != "cpu":
            kwargs["enable_sleep_mode"] = settings.sleep
        if settings.weight_sync in ("nccl", "ipc"):
            from vllm.config import WeightTransferConfig

            kwargs["weight_transfer_config"] = WeightTransferConfig(backend=settings.weight_sync)
        os.environ.update(engine_environment(settings))
        self.llm = LLM(**kwargs)
        self.in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        self.skipped: list[str] = []  # every prompt skipped for its size, named
        self.sleeping: set[str] = set()  # what sleep mode released: "weights", "kv_cache"

    # ------------------------------------------------------------------ generation

    def _prompt(self, request: RolloutRequest, max_new_tokens: int) -> tuple[dict | None, str | None]:
        text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        slots = ids.count(self.image_pad_id)
        if slots != len(request.images):
            raise ValueError(f"item {request.item_id}: prompt has {slots} picture slots, {len(request.images)} given")
        problem = budget_problem(request.item_id, len(ids) - slots, [p.size for p in request.images],
                                 max_new_tokens, self.limits)
        if problem:
            return None, problem
        if request.images:
            return {"prompt": text, "multi_modal_data": {"image": list(request.images)}}, None
        return {"prompt_token_ids": ids}, None

    @functools.cached_property
    def digit_ids(self) -> list[int]:
        """The tokens "1".."5" (the expected readout); looked up once, on first use: a tokenizer without them only
        fails that readout."""
        return digit_token_ids(self.tokenizer)

    def _sampling_params(self, sampling: SamplingSettings):
        from vllm import SamplingParams

        greedy = sampling.greedy
        extra = {"top_k": sampling.top_k} if sampling.top_k > 0 and not greedy else {}
        if sampling.digit_logprobs:  # raw log-probs (temperature 1) of "1".."5", besides the sampled token's
            extra["logprob_token_ids"] = self.digit_ids
        else:
            extra["logprobs"] = 0  # the sampled token's log-prob
        return SamplingParams(
            n=1 if greedy else sampling.n,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop_token_ids=self.eos_ids,
            # Picture tokens sampled into an answer break the learner's forward, as in the HF backend.
            logit_bias={token: -100.0 for token in self.vision_ids},
            **extra,
        )

    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings) -> list[list[Completion]]:
        self.wake(["weights", "kv_cache"])
        n = 1 if sampling.greedy else sampling.n
        prompts, where = [], []
        answers: list[list[Completion]] = [[] for _ in requests]
        for index, request in enumerate(requests):
            prompt, problem = self._prompt(request, sampling.max_new_tokens)
            if problem is None:
                prompts.append(prompt)
                where.append(index)
            elif self.settings.on_oversized == "skip":
                print(f"skipping rollout: {problem}", flush=True)
                self.skipped.append(problem)
                answers[index] = [Completion(token_ids=[], text="", logprobs=[], finished=False, skipped=True)
                                  for _ in range(n)]
            else:
                raise ValueError(problem)
        outputs = self.llm.generate(prompts, self._sampling_params(sampling), use_tqdm=False) if prompts else []
        for index, output in zip(where, outputs):
            answers[index] = [self._completion(o, sampling.digit_logprobs) for o in output.outputs]
        if self.settings.sleep:
            self.llm.sleep(level=1)
            self.sleeping = {"weights", "kv_cache"}
        return answers

    def _completion(self, output, digits: bool) -> Completion:
        tokens = list(output.token_ids)
        steps = list(output.logprobs or [])
        completion = Completion(token_ids=tokens, text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                                logprobs=[step[token].logprob for step, token in zip(steps, tokens)],
                                finished=output.finish_reason == "stop")
        if digits:
            completion.digit_logprobs = [[step[token].logprob for token in self.digit_ids] for step in steps]
            completion.token_starts = token_starts(self.tokenizer, tokens, completion.text)
        return completion

    # ------------------------------------------------------------------ weights

    def wake(self, tags: list[str]) -> None:
        """Wake those of `tags` ("weights", "kv_cache") that sleep: vLLM wakes nothing when a tag it is asked for
        is awake already (after a sync that failed half-way, say), which would leave the other one asleep."""
        asleep = [tag for tag in tags if tag in self.sleeping]
        if asleep:
            self.llm.wake_up(tags=asleep)
            self.sleeping -= set(asleep)

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: int) -> None:
        """Hugging Face-named full weights, loaded in place (weight_sync: object_store)."""
        call_with_timeout(f"weight sync to version {version}", self.sync_timeout_s,
                          self._reload, weights)

    def _reload(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.wake(["weights"])
        if self.in_process:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items())})
        else:
            from safetensors.torch import save_file

            where = _fast_tmp() or tempfile.gettempdir()
            with one_copy_per_node(where), tempfile.TemporaryDirectory(prefix="preresq-weights-", dir=where) as folder:
                save_file({k: v.contiguous() for k, v in weights.items()}, str(Path(folder) / "model.safetensors"))
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        self.after_sync()

    # vLLM's weight-transfer control plane (rollouts.backend.WeightTransferTarget); names and request
    # shapes are vLLM's own.
    def init_weight_transfer_engine(self, request) -> None:
        self.llm.init_weight_transfer_engine(request)

    def start_weight_update(self) -> None:
        self.wake(["weights"])
        self.llm.start_weight_update()

    def update_weights(self, request) -> None:
        self.llm.update_weights(request)

    def finish_weight_update(self) -> None:
        self.llm.finish_weight_update()

    def after_sync(self) -> None:
        """Cached prefixes and cached picture embeddings were computed with the old weights (the vision
        tower is trained too); then the KV cache comes back."""
        self.llm.reset_prefix_cache()
        # Encoder outputs are cached by picture hash; the processed pixels (the mm cache) stay valid.
        self.llm.llm_engine.reset_encoder_cache()
        self.wake(["kv_cache"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError("vLLM keeps fused weights (qkv_proj, gate_up_proj): compare answers, not digests "
                                  "(trainer.verify_sync needs rollout.backend: hf)")


def _fast_tmp() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
