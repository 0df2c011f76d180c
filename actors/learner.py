"""The learner: one rank of a DeepSpeed ZeRO data-parallel group that applies GRPO updates.

`LearnerRank` is a plain class: Ray wraps it as an actor (one per rank, see actors/groups.py), and
it also runs in-process for a single rank (tests, the GPU machine without Ray). DeepSpeed code stays
in this importable module because Ray cannot pickle an actor class that touches `deepspeed.ops`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from actors.call_hooks import hooked
from actors.checkpoint_files import written_by
from actors.grpo_objective import grpo_loss, rollout_importance_weights
from actors.lora import (
    LoraSettings,
    adapter_state,
    add_adapters,
    delta_parameters,
    merged_weights,
    reference_forward,
)
from actors.notices import silence_known_notices
from actors.threads import pin_threads
from models.loading import DTYPES, load_policy
from models.processor import QualityProcessor
from models.sequences import grouped_logprobs
from models.weights import sample_checksum, sample_checksums, weights_digest

ZERO_STAGES = (0, 1, 2, 3)
COMM_BACKENDS = ("gloo", "nccl")  # gloo on CPU


@dataclass
class TrainSample:
    """One answer to learn from: its prompt (pictures + messages), tokens and advantage. `group`: the index of its
    request in the step's batch; answers with the same group share their prompt (one forward of it)."""

    images: list
    messages: list[dict]
    token_ids: list[int]
    advantage: float
    rollout_logprobs: list[float]
    group: int


def deal_samples(requests, answers, advantages: np.ndarray, ranks: int) -> list[list[TrainSample]]:
    """requests [B], answers [B][K] (Completion), advantages [B, K] -> each rank's answers to learn from: equal
    consecutive shares (B*K divides by ranks: checked at start-up), so a group's answers stay on one rank as far
    as the split allows and share their prompt's forward there. Equal shares make the ranks' mean gradient
    the same whichever answers each holds."""
    samples = [
        TrainSample(req.images, req.messages, c.token_ids, float(advantages[i, k]), c.logprobs, i)
        for i, (req, row) in enumerate(zip(requests, answers))
        for k, c in enumerate(row)
    ]
    share = len(samples) // ranks
    return [samples[r * share : (r + 1) * share] for r in range(ranks)]


def adapter_folder(policy_folder: str) -> str:
    """The LoRA adapter folder saved beside a merged policy folder: policy/ -> policy-adapter/."""
    return str(Path(policy_folder).with_name(Path(policy_folder).name + "-adapter"))


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


@dataclass
class LearnerSettings:
    """What a rank needs from the run's config (`from_config`; the values live in configs/base.yaml)."""

    model_path: str
    dtype: str
    device: str
    zero_stage: int
    comm_backend: str
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    grad_clip: float
    micro_batch: int
    samples_per_rank: int  # answers this rank learns from each step
    temperature: float
    clip_low: float
    clip_high: float
    kl_coef: float
    kl_estimator: str
    loss_aggregation: str
    rollout_is_cap: float | None  # truncated importance sampling against the rollout log-probs; None: off
    min_pixels: int | None
    max_pixels: int | None
    threads: int
    seed: int
    collective_timeout_s: float  # torch.distributed's: a rank stuck on a dead peer errs after this, not 30 min
    lora: LoraSettings  # rank 0: full fine-tuning

    @classmethod
    def from_config(cls, cfg) -> LearnerSettings:
        per_rank = cfg.trainer.batch_size * cfg.rollout.group_size // cfg.learner.num_ranks
        learner, algo = cfg.learner, cfg.algorithm
        return cls(
            model_path=cfg.model.path,
            dtype=cfg.model.dtype,
            device=learner.device,
            zero_stage=learner.zero_stage,
            comm_backend=learner.comm_backend,
            lr=learner.lr,
            weight_decay=learner.weight_decay,
            betas=tuple(learner.betas),
            grad_clip=learner.grad_clip,
            # Micro-batches must tile the rank's answers exactly for DeepSpeed's accumulation boundary.
            micro_batch=largest_divisor_at_most(per_rank, learner.micro_batch),
            samples_per_rank=per_rank,
            temperature=cfg.rollout.temperature,  # log-probs at the temperature the answers were sampled at
            clip_low=algo.clip_low,
            clip_high=algo.clip_high,
            kl_coef=algo.kl_coef,
            kl_estimator=algo.kl_estimator,
            loss_aggregation=algo.loss_aggregation,
            rollout_is_cap=algo.rollout_is_cap if algo.rollout_is == "truncated" else None,
            min_pixels=cfg.model.min_pixels,
            max_pixels=cfg.model.max_pixels,
            threads=learner.threads,
            seed=cfg.run.seed,
            collective_timeout_s=learner.step_timeout_s,
            lora=LoraSettings.from_config(learner.lora),
        )


def _deepspeed_config(s: LearnerSettings, world_size: int) -> dict:
    accumulation = max(1, -(-s.samples_per_rank // s.micro_batch))
    config = {
        "train_micro_batch_size_per_gpu": s.micro_batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": s.micro_batch * accumulation * world_size,
        "gradient_clipping": s.grad_clip,
        "zero_optimization": {"stage": s.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if s.dtype == "bfloat16":
        config["bf16"] = {"enabled": True}
    elif s.dtype == "float16":
        config["fp16"] = {"enabled": True}
    return config


def free_address() -> tuple[str, int]:
    """This node's IP and a free TCP port, for rank 0 to host the process group."""
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    try:
        import ray.util

        ip = ray.util.get_node_ip_address()
    except Exception:
        ip = "127.0.0.1"
    return ip, port


class LearnerRank:
    """Two-phase start: construct every rank, ask rank 0 for `address()`, then `setup` all at once."""

    def __init__(self, settings: LearnerSettings, rank: int, world_size: int):
        self.settings, self.rank, self.world_size = settings, rank, world_size
        pin_threads(settings.threads)
        silence_known_notices()
        if settings.device == "cpu":
            os.environ["DS_ACCELERATOR"] = "cpu"  # said, not guessed: DeepSpeed's guess warns in every rank

    def address(self) -> tuple[str, int]:
        return free_address()

    def setup(self, master_addr: str, master_port: int) -> dict:
        """Join the process group and build the DeepSpeed engine (collective: all ranks at once).

        Returns the rank and its share of the reference model's parameters."""
        settings, rank, world_size = self.settings, self.rank, self.world_size
        os.environ.update(
            RANK=str(rank),
            LOCAL_RANK="0" if settings.device == "cpu" else os.environ.get("LOCAL_RANK", "0"),
            WORLD_SIZE=str(world_size),
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port),
        )
        torch.manual_seed(settings.seed + rank)
        import deepspeed
        import deepspeed.ops

        # Skip the ~50 s JIT build of DeepSpeed's shared-memory comm op on CPU.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend=settings.comm_backend, auto_mpi_discovery=False,
                                   timeout=timedelta(seconds=settings.collective_timeout_s))
        self.deepspeed = deepspeed
        self.processor = QualityProcessor(settings.model_path, settings.min_pixels, settings.max_pixels)
        device = settings.device if settings.device == "cpu" else f"cuda:{torch.cuda.current_device()}"
        self.device = device
        # Full fine-tuning keeps fp32 weights; under LoRA the frozen base stays in model.dtype (a 7B in fp32: 33 GB).
        lora = settings.lora.enabled
        model = load_policy(settings.model_path, dtype=settings.dtype if lora else "float32", device=device)
        # transformers 5.x renamed it (the vLLM lane pins an older one)
        getattr(model, "activation_checkpointing_disable", model.gradient_checkpointing_disable)()
        if lora:
            model = add_adapters(model, settings.lora)
        # A client torch AdamW: DeepSpeed's own would JIT-compile FusedAdam (~90 s on CPU). Only trainable
        # parameters: under LoRA no optimizer state exists for the frozen base.
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=settings.lr, betas=tuple(settings.betas),
            weight_decay=settings.weight_decay,
        )
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=_deepspeed_config(settings, world_size)
        )
        self.reference = None
        self.last_sync: dict = {}  # what the latest full_weights / send_weights sent (delivery_record)
        self.uses_reference = settings.kl_estimator != "none" and settings.kl_coef > 0
        if self.uses_reference and not lora:  # under LoRA the reference is the policy with its adapters off
            reference = load_policy(settings.model_path, dtype=settings.dtype, device=device).eval()
            reference.requires_grad_(False)
            if settings.zero_stage == 3:
                # Sharded like the policy: a full frozen copy per rank is 16.6 GB for the 7B model.
                config = {k: v for k, v in _deepspeed_config(settings, world_size).items() if k != "gradient_clipping"}
                reference, *_ = deepspeed.initialize(model=reference, config=config)
                reference.eval()
            self.reference = reference
        return {"rank": rank, **self.reference_share()}

    def reference_share(self) -> dict[str, int]:
        """Parameters of the frozen reference model held on this rank, and in the whole model."""
        if self.reference is None:
            return {"reference_params_held": 0, "reference_params": 0}
        params = list(self.reference.parameters())
        held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
        total = sum(getattr(p, "ds_numel", p.numel()) for p in params)
        return {"reference_params_held": int(held), "reference_params": int(total)}

    # ------------------------------------------------------------------ learning

    def _encode(self, samples: list[TrainSample]):
        prompts = self.processor.encode([s.messages for s in samples], [s.images for s in samples])
        return {k: v.to(self.device) for k, v in prompts.items()}

    def _encode_groups(self, samples: list[TrainSample]) -> tuple[dict, list[int]]:
        """The distinct prompts of `samples` (one per group), encoded once each, and the row of each sample's
        prompt."""
        row_of: dict[int, int] = {}
        distinct, rows = [], []
        for sample in samples:
            if sample.group not in row_of:
                row_of[sample.group] = len(distinct)
                distinct.append(sample)
            rows.append(row_of[sample.group])
        return self._encode(distinct), rows

    @hooked("train_step")
    def train_step(self, samples: list[TrainSample], lr: float, temperature: float | None = None) -> dict[str, float]:
        """One optimizer step over this rank's answers (micro-batched) at learning rate `lr`, their log-probs at
        the `temperature` they were sampled at (None: the settings', rollout.temperature at start-up).

        A micro-batch whose loss is not finite contributes no gradient (its backward still runs, for the
        collectives of the other ranks); a non-finite gradient makes DeepSpeed skip the whole step.
        Returns rank-local statistics over the applied micro-batches, with `nonfinite` the share not
        applied (1.0 when the step was skipped), `applied` 1/0 and `grad_norm`.
        """
        s = self.settings
        temperature = s.temperature if temperature is None else temperature
        start = time.time()
        self.engine.train()
        if s.lora.dropout > 0:  # the adapters' dropout masks from (seed, rank, step): a resumed run draws the same
            torch.manual_seed(s.seed * 1_000_003 + self.rank * 10_007 + self.engine.global_steps)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        skipped_before = self.engine.skipped_steps
        totals: dict[str, float] = {}
        applied = rejected = 0
        micro_batches = [samples[i : i + s.micro_batch] for i in range(0, len(samples), s.micro_batch)]
        for index, chunk in enumerate(micro_batches):
            # Each distinct prompt, its pictures included, is run once for all of its answers here.
            prompts, rows = self._encode_groups(chunk)
            tokens = [c.token_ids for c in chunk]
            logprobs, entropy, mask = grouped_logprobs(
                self.engine, prompts, rows, tokens, self.processor.pad_id, temperature
            )
            mask = mask.to(logprobs.device)
            ref_logprobs = None
            if self.uses_reference:  # only with a KL term (kl_coef > 0 and an estimator)
                reference = self.reference if self.reference is not None else self.engine.module
                with torch.no_grad(), reference_forward(reference):
                    ref_logprobs, _, _ = grouped_logprobs(
                        reference, prompts, rows, tokens, self.processor.pad_id, temperature
                    )
            advantages = torch.tensor([c.advantage for c in chunk], dtype=logprobs.dtype, device=logprobs.device)
            rollout = torch.zeros_like(logprobs)
            for row, c in enumerate(chunk):
                n = min(len(c.rollout_logprobs), rollout.shape[1])
                rollout[row, :n] = torch.tensor(c.rollout_logprobs[:n], dtype=rollout.dtype)
            is_weights, is_stats = None, {}
            if s.rollout_is_cap is not None:
                is_weights, is_stats = rollout_importance_weights(logprobs, rollout, mask, s.rollout_is_cap)
            # One policy update per batch: pi_old is the current policy, detached.
            loss, stats = grpo_loss(
                logprobs,
                logprobs.detach(),
                ref_logprobs,
                advantages,
                mask,
                clip_low=s.clip_low,
                clip_high=s.clip_high,
                kl_coef=s.kl_coef,
                kl_estimator=s.kl_estimator,
                aggregation=s.loss_aggregation,
                is_weights=is_weights,
            )
            stats.update(is_stats)
            finite = bool(torch.isfinite(loss))
            if not finite:  # a zero gradient of the same graph: every rank still joins each collective
                loss = (logprobs * 0.0).nan_to_num(0.0, 0.0, 0.0).sum()
            self.engine.backward(loss)
            if index == len(micro_batches) - 1 and not self._any_rank_applied(applied + finite):
                for group in self.engine.optimizer.param_groups:  # nothing to apply: Adam's momentum must not move
                    group["lr"] = 0.0
            self.engine.step()
            if not finite:
                rejected += len(chunk)
                continue
            applied += len(chunk)
            with torch.no_grad():
                tokens_here = float(mask.sum())
                stats["loss"] = float(loss)
                stats["entropy"] = float((entropy * mask).sum() / mask.sum().clamp(min=1))
                stats["logprob_gap"] = float(((logprobs - rollout).abs() * mask).sum() / mask.sum().clamp(min=1))
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value * len(chunk)
            totals["tokens"] = totals.get("tokens", 0.0) + tokens_here
        out = {k: v / max(applied, 1) for k, v in totals.items() if k != "tokens"}
        step_skipped = self.engine.skipped_steps > skipped_before
        out["nonfinite"] = 1.0 if step_skipped else rejected / max(len(samples), 1)
        out["applied"] = 0.0 if step_skipped or not applied else 1.0
        norm = self.engine.get_global_grad_norm()
        out["grad_norm"] = float(norm) if norm is not None and not step_skipped else 0.0
        out["tokens"] = totals.get("tokens", 0.0)
        out["seconds"] = time.time() - start
        return out

    def _any_rank_applied(self, applied_here: int) -> bool:
        """Whether any rank has a finite micro-batch this step (collective when there are several ranks)."""
        if self.world_size == 1:
            return applied_here > 0
        import torch.distributed as dist

        count = torch.tensor([float(applied_here)], device=self.device)
        dist.all_reduce(count)
        return bool(count.item() > 0)

    # ------------------------------------------------------------------ weights

    def full_weights(self) -> dict[str, torch.Tensor] | None:
        """The full policy weights on CPU on rank 0 (None elsewhere), Hugging Face-named (merged under LoRA), in
        model.dtype; their checksums are kept for `delivery_record`. Collective: call on every rank."""
        module = self.engine.module
        params = list(module.parameters())
        with self.deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=self.settings.zero_stage == 3):
            if self.rank != 0:
                return None
            dtype = DTYPES[self.settings.dtype]
            if self.settings.lora.enabled:
                weights, before_cast = merged_weights(module, dtype)
            else:
                state = module.state_dict()
                weights = {name: tensor.detach().to("cpu", dtype).clone() for name, tensor in state.items()}
                before_cast = sample_checksums(state)
            self.last_sync = {"sent": sample_checksums(weights), "merged": before_cast,
                              "trainable": self._trainable_checksum()}
            return weights

    def _trainable_checksum(self) -> float:
        """A checksum over the parameters the optimizer moves (under LoRA the B matrices: actors/lora.
        delta_parameters), gathered by the caller under ZeRO-3: it changes when a step changed the policy,
        whatever a sync then sends."""
        module = self.engine.module
        moved = delta_parameters(module) if self.settings.lora.enabled else [p for p in module.parameters()
                                                                             if p.requires_grad]
        return sum(sample_checksum(p) for p in moved)

    def delivery_record(self) -> dict:
        """What the latest sync sent from this rank (rank 0; empty elsewhere), as checksums: "sent" name -> of the
        tensor sent, "merged" name -> of it before the cast to model.dtype, "trainable" of the parameters the
        optimizer moves. Not collective: no gather."""
        return self.last_sync

    def connect_rollouts(self, settings, rollouts: list, master_address: str, master_port: int) -> None:
        """Set up vLLM's weight transfer to the rollout engines (settings: actors.weight_transfer.TransferSettings).
        Collective."""
        from actors.weight_transfer import start_trainer, zero_source

        source = zero_source(self.engine.module, self.settings.zero_stage, DTYPES[self.settings.dtype],
                             record=self._record_sent if self.rank == 0 else None)
        self.transfer = start_trainer(settings, self.rank, rollouts, master_address, master_port, source)

    def _record_sent(self, sent: dict[str, float], merged: dict[str, float], trainable: float) -> None:
        self.last_sync = {"sent": sent, "merged": merged, "trainable": trainable}

    def send_weights(self) -> None:
        """Push the current weights through vLLM's weight transfer. Collective: call on every rank."""
        self.transfer.send_weights()

    def weights_digest(self) -> str | None:
        weights = self.full_weights()
        return None if weights is None else weights_digest(weights)

    def save_pretrained(self, folder: str) -> None:
        """Hugging Face folder of the current policy (rank 0 writes), merged under LoRA, with the adapter folder
        beside it (`adapter_folder`). Collective."""
        weights = self.full_weights()
        adapters = self._gathered_adapters() if self.settings.lora.enabled else None
        if self.rank == 0:
            module = self.engine.module
            if adapters is not None:
                module.save_pretrained(adapter_folder(folder), state_dict=adapters)
                module = module.get_base_model()  # the base's config and class: a plain Qwen2.5-VL folder
            module.save_pretrained(folder, state_dict=weights)
            self.processor.tokenizer.save_pretrained(folder)
            self.processor.image_processor.save_pretrained(folder)

    def _gathered_adapters(self) -> dict[str, torch.Tensor] | None:
        trainable = [p for p in self.engine.module.parameters() if p.requires_grad]
        with self.deepspeed.zero.GatheredParameters(trainable, enabled=self.settings.zero_stage == 3):
            return adapter_state(self.engine.module) if self.rank == 0 else None

    def bytes_by_kind(self) -> dict[str, int]:
        """Bytes this rank holds, by kind, from the tensors themselves: trainable and frozen parameters, the
        gradients of a backward, the optimizer's state (after a step), a separate reference model."""
        def size(tensors) -> int:
            return int(sum(t.numel() * t.element_size() for t in tensors))

        def held(p):  # a ZeRO-3 parameter's local shard
            return getattr(p, "ds_tensor", p)

        params = list(self.engine.module.parameters())
        optimizer = getattr(self.engine.optimizer, "optimizer", self.engine.optimizer)
        state = [t for entry in optimizer.state.values() for t in entry.values()
                 if torch.is_tensor(t) and t.numel() > 1]  # not Adam's step counters
        trainable = [held(p) for p in params if p.requires_grad]
        return {
            "trainable_params": size(trainable),
            "frozen_params": size(held(p) for p in params if not p.requires_grad),
            "gradients": size(trainable),  # backward allocates one per trainable element, in its dtype; none frozen
            "optimizer_state": size(state),
            "reference_model": size(held(p) for p in self.reference.parameters()) if self.reference is not None else 0,
        }

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, folder: str, tag: str) -> dict[str, dict]:
        """DeepSpeed model + optimizer state under folder/tag. Collective. Returns the files this rank wrote, hashed
        here (actors.checkpoint_files.written_by)."""
        # Under LoRA the frozen base is the model folder's: only the adapters and their optimizer state are saved.
        self.engine.save_checkpoint(folder, tag=tag, exclude_frozen_parameters=self.settings.lora.enabled)
        return written_by(self.rank, folder)

    def sees(self, path: str, content: str) -> tuple[bool, str]:
        """Whether the file at `path` holds `content` on this rank's node, and the node's name."""
        import socket

        try:
            return Path(path).read_text() == content, socket.gethostname()
        except OSError:
            return False, socket.gethostname()

    def load_checkpoint(self, folder: str, tag: str) -> None:
        path, _ = self.engine.load_checkpoint(folder, tag=tag, load_module_strict=not self.settings.lora.enabled)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {tag!r} in {folder}")

