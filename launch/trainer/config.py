"""The typed schema of a run's configuration, and loading it: base.yaml <- --config file <- dotlist.

Defaults live in configs/base.yaml, not here; the schema only says which keys exist and their
types. Everything is checked once, before any actor starts, and errors name the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from actors.grpo_objective import ADVANTAGE_ESTIMATORS, KL_ESTIMATORS, LOSS_AGGREGATIONS, ROLLOUT_IS
from actors.learner import COMM_BACKENDS, ZERO_STAGES
from actors.lr_schedule import LR_SCHEDULES
from actors.placement import PLACEMENT_MODES, PLACEMENT_STRATEGIES
from actors.reward import PREFERENCE_SCOPES
from actors.rollout import ROLLOUT_BACKENDS
from evaluation.readout import READOUTS
from launch.trainer.health import SIGNAL_METRICS, VALIDATION_SIGNALS
from models.loading import DTYPES
from qadata.requests import DATA_TASKS
from qadata.video import DECODERS
from rewards.answer_format import QUESTION_CHOICES
from rewards.prpo import ACCURACY_REWARDS
from rollouts.vllm_backend import ON_OVERSIZED, WEIGHT_SYNCS

BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "base.yaml"
MISSING = "???"


class ConfigError(ValueError):
    pass


@dataclass
class RunConfig:
    name: str = MISSING
    output_dir: str = MISSING
    seed: int = MISSING
    resume: bool = MISSING
    allow_config_change: bool = MISSING
    shuffle_labels: bool = MISSING
    stop_grace_s: float = MISSING
    max_relaunches: int = MISSING


@dataclass
class ModelConfig:
    path: str = MISSING
    dtype: str = MISSING
    min_pixels: Optional[int] = MISSING
    max_pixels: Optional[int] = MISSING


@dataclass
class DataConfig:
    task: str = MISSING
    train_manifest: str = MISSING
    eval_manifest: Optional[str] = MISSING
    train_split: str = MISSING
    eval_split: str = MISSING
    eval_limit: Optional[int] = MISSING
    question: str = MISSING
    mix: dict[str, float] = MISSING


@dataclass
class VideoConfig:
    global_frames: int = MISSING
    grid_columns: int = MISSING
    cell_scale: float = MISSING
    local_frames: int = MISSING
    decoder: str = MISSING
    max_stream_pixels: int = MISSING
    max_seconds: float = MISSING
    max_bytes: int = MISSING


@dataclass
class VLLMConfig:
    tensor_parallel_size: int = MISSING
    gpu_memory_utilization: float = MISSING
    kv_cache_bytes: Optional[int] = MISSING
    max_model_len: int = MISSING
    max_pictures: int = MISSING
    enforce_eager: bool = MISSING
    sleep: bool = MISSING
    weight_sync: str = MISSING
    rendezvous_timeout_s: float = MISSING
    transfer_buffer_bytes: int = MISSING
    on_oversized: str = MISSING


@dataclass
class RolloutConfig:
    backend: str = MISSING
    num_actors: int = MISSING
    device: str = MISSING
    group_size: int = MISSING
    temperature: float = MISSING
    top_p: float = MISSING
    top_k: int = MISSING
    max_new_tokens: int = MISSING
    prompt_chunk: int = MISSING
    threads: int = MISSING
    sync_timeout_s: float = MISSING
    generate_timeout_s: float = MISSING
    max_restarts: int = MISSING
    vllm: VLLMConfig = field(default_factory=VLLMConfig)


@dataclass
class RewardConfig:
    accuracy: str = MISSING
    preference_scope: str = MISSING
    preference_chunk: int = MISSING
    format_weight: float = MISSING
    accuracy_weight: float = MISSING
    std_margin: float = MISSING
    std_penalty: float = MISSING
    triplet_balance: float = MISSING
    rank_to_mos: float = MISSING
    pairwise: float = MISSING
    triplet_ranking: float = MISSING
    timeout_s: float = MISSING
    max_restarts: int = MISSING


@dataclass
class DynamicSamplingConfig:
    enabled: bool = MISSING
    min_reward_std: float = MISSING
    max_extra_items: int = MISSING


@dataclass
class AlgorithmConfig:
    advantage: str = MISSING
    advantage_eps: float = MISSING
    clip_low: float = MISSING
    clip_high: float = MISSING
    kl_coef: float = MISSING
    kl_estimator: str = MISSING
    loss_aggregation: str = MISSING
    rollout_is: str = MISSING
    rollout_is_cap: float = MISSING
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    variance_weighting: float = MISSING


@dataclass
class LoraConfig:
    rank: int = MISSING
    alpha: float = MISSING
    dropout: float = MISSING
    language_targets: list[str] = MISSING
    vision_targets: list[str] = MISSING


@dataclass
class LearnerConfig:
    num_ranks: int = MISSING
    zero_stage: int = MISSING
    comm_backend: str = MISSING
    device: str = MISSING
    lr: float = MISSING
    lr_schedule: str = MISSING
    warmup_steps: int = MISSING
    min_lr_ratio: float = MISSING
    weight_decay: float = MISSING
    betas: list[float] = MISSING
    grad_clip: float = MISSING
    micro_batch: int = MISSING
    cpus_per_rank: float = MISSING
    gpus_per_rank: float = MISSING
    threads: int = MISSING
    step_timeout_s: float = MISSING
    checkpoint_timeout_s: float = MISSING
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class StageConfig:
    name: str = MISSING
    steps: int = MISSING
    overrides: dict[str, Any] = field(default_factory=dict)  # nested like the config, only STAGE_KEYS; may be left out


@dataclass
class TrainerConfig:
    steps: int = MISSING
    stages: list[StageConfig] = MISSING
    batch_size: int = MISSING
    log_every: int = MISSING
    eval_every: int = MISSING
    checkpoint_every: int = MISSING
    checkpoint_every_s: Optional[float] = MISSING
    keep_checkpoints: int = MISSING
    verify_sync: bool = MISSING
    max_staleness: int = MISSING


@dataclass
class HealthSignalConfig:
    window: int = MISSING
    min: Optional[float] = MISSING
    max: Optional[float] = MISSING
    spike: Optional[float] = MISSING
    spike_window: Optional[int] = MISSING
    spike_floor: float = MISSING


@dataclass
class HealthConfig:
    enabled: bool = MISSING
    format_rate: HealthSignalConfig = field(default_factory=HealthSignalConfig)
    parse_rate: HealthSignalConfig = field(default_factory=HealthSignalConfig)
    spread: HealthSignalConfig = field(default_factory=HealthSignalConfig)
    item_spread: HealthSignalConfig = field(default_factory=HealthSignalConfig)
    val_spread: HealthSignalConfig = field(default_factory=HealthSignalConfig)
    distinct: HealthSignalConfig = field(default_factory=HealthSignalConfig)
    nonfinite: HealthSignalConfig = field(default_factory=HealthSignalConfig)
    kl: HealthSignalConfig = field(default_factory=HealthSignalConfig)
    snapshot_every: int = MISSING
    keep_snapshots: int = MISSING
    lr_factor: float = MISSING
    max_rollbacks: int = MISSING
    min_scored: float = MISSING


@dataclass
class EvalConfig:
    readout: str = MISSING
    samples: int = MISSING
    max_new_tokens: int = MISSING
    batch_size: int = MISSING


@dataclass
class TrackingConfig:
    enabled: bool = MISSING
    experiment: str = MISSING
    uri: Optional[str] = MISSING
    queue_metrics: int = MISSING
    timeout_s: float = MISSING
    samples_every: int = MISSING
    sample_items: int = MISSING
    sample_answers: int = MISSING
    thumbnail_px: int = MISSING


@dataclass
class PlacementConfig:
    mode: str = MISSING
    strategy: str = MISSING
    colocated_rollout_share: float = MISSING
    declared_gpus: bool = MISSING
    timeout_s: float = MISSING


@dataclass
class RayConfig:
    address: Optional[str] = MISSING
    num_cpus: Optional[int] = MISSING


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)


# Each option's allowed values, as the module that owns the option declares them.
CHOICES = {
    "model.dtype": tuple(DTYPES),
    "data.task": DATA_TASKS,
    "rollout.backend": ROLLOUT_BACKENDS,
    "rollout.vllm.weight_sync": WEIGHT_SYNCS,
    "rollout.vllm.on_oversized": ON_OVERSIZED,
    "reward.accuracy": ACCURACY_REWARDS,
    "reward.preference_scope": PREFERENCE_SCOPES,
    "algorithm.advantage": ADVANTAGE_ESTIMATORS,
    "algorithm.kl_estimator": KL_ESTIMATORS,
    "algorithm.loss_aggregation": LOSS_AGGREGATIONS,
    "algorithm.rollout_is": ROLLOUT_IS,
    "learner.zero_stage": ZERO_STAGES,
    "learner.lr_schedule": LR_SCHEDULES,
    "learner.comm_backend": COMM_BACKENDS,
    "placement.mode": PLACEMENT_MODES,
    "placement.strategy": PLACEMENT_STRATEGIES,
    "video.decoder": tuple(DECODERS),
    "eval.readout": READOUTS,
    "data.question": QUESTION_CHOICES,
}
# What a stage of trainer.stages may change (a key, or a section's keys with a trailing dot): what the prompts ask,
# how answers are sampled and rewarded, which groups are kept. The learner's shape (batch, group size, ranks,
# its optimizer and loss settings) stays one for the whole run, as does the lr schedule (over trainer.steps).
STAGE_KEYS = ("data.question", "rollout.temperature", "rollout.top_p", "rollout.top_k", "rollout.max_new_tokens",
              "reward.accuracy", "reward.preference_scope", "reward.preference_chunk", "reward.format_weight",
              "reward.accuracy_weight", "reward.std_margin", "reward.std_penalty", "reward.triplet_balance",
              "reward.rank_to_mos", "reward.pairwise", "reward.triplet_ranking", "algorithm.advantage",
              "algorithm.advantage_eps", "algorithm.dynamic_sampling.", "algorithm.variance_weighting")
AT_LEAST_ONE = (
    "rollout.num_actors",
    "rollout.group_size",
    "rollout.max_new_tokens",
    "rollout.vllm.tensor_parallel_size",
    "rollout.vllm.max_model_len",
    "rollout.vllm.max_pictures",
    "rollout.prompt_chunk",
    "rollout.threads",
    "learner.threads",
    "reward.preference_chunk",
    "learner.num_ranks",
    "learner.micro_batch",
    "trainer.steps",
    "trainer.batch_size",
    "trainer.log_every",
    "trainer.eval_every",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "eval.samples",
    "tracking.sample_items",
    "tracking.sample_answers",
    "tracking.thumbnail_px",
    "eval.max_new_tokens",
    "eval.batch_size",
    "video.global_frames",
    "video.grid_columns",
    "video.local_frames",
    "health.snapshot_every",
    "health.keep_snapshots",
)


# key: (low, high, open_low, open_high); None leaves that side unbounded
RANGES = {
    **{key: (1, None, False, False) for key in AT_LEAST_ONE},  # the entries below may tighten these
    "rollout.group_size": (2, None, False, False),  # one answer has no group to be compared with
    "rollout.temperature": (0, None, True, False),
    "rollout.top_p": (0, 1, True, False),
    "rollout.top_k": (0, None, False, False),
    "rollout.sync_timeout_s": (0, None, True, False),
    "rollout.generate_timeout_s": (0, None, True, False),
    "rollout.max_restarts": (0, None, False, False),
    "reward.timeout_s": (0, None, True, False),
    "reward.max_restarts": (0, None, False, False),
    "reward.format_weight": (0, None, False, False),
    "reward.accuracy_weight": (0, None, False, False),
    "reward.std_margin": (0, None, False, False),
    "algorithm.advantage_eps": (0, None, True, False),
    "algorithm.clip_low": (0, 1, True, True),
    "algorithm.clip_high": (0, None, True, False),
    "algorithm.kl_coef": (0, None, False, False),
    "learner.lr": (0, None, True, False),
    "learner.warmup_steps": (0, None, False, False),
    "learner.min_lr_ratio": (0, 1, False, False),
    "learner.weight_decay": (0, None, False, False),
    "learner.grad_clip": (0, None, True, False),
    "learner.cpus_per_rank": (0, None, False, False),
    "learner.gpus_per_rank": (0, None, False, False),
    "learner.step_timeout_s": (0, None, True, False),
    "learner.checkpoint_timeout_s": (0, None, True, False),
    "placement.timeout_s": (0, None, True, False),
    "run.stop_grace_s": (0, None, True, False),
    "run.max_relaunches": (0, None, False, False),
    "tracking.queue_metrics": (1, None, False, False),
    "tracking.timeout_s": (0, None, True, False),
    "tracking.samples_every": (0, None, False, False),
    "trainer.checkpoint_every_s": (0, None, True, False),
    "model.min_pixels": (1, None, False, False),
    "model.max_pixels": (1, None, False, False),
    "placement.colocated_rollout_share": (0, 1, True, True),
    "video.cell_scale": (0, 1, True, False),
    "video.max_stream_pixels": (1, None, False, False),
    "video.max_seconds": (0, None, True, False),
    "video.max_bytes": (1, None, False, False),
    "algorithm.rollout_is_cap": (1, None, False, False),
    "learner.lora.rank": (0, None, False, False),
    "learner.lora.alpha": (0, None, True, False),
    "learner.lora.dropout": (0, 1, False, True),
    "algorithm.dynamic_sampling.min_reward_std": (0, None, False, False),
    "algorithm.dynamic_sampling.max_extra_items": (0, None, False, False),
    "algorithm.variance_weighting": (0, None, False, False),
    "health.lr_factor": (0, 1, True, True),
    "health.max_rollbacks": (0, None, False, False),
    "health.min_scored": (0, 1, False, False),
    "rollout.vllm.gpu_memory_utilization": (0, 1, True, False),
    "rollout.vllm.rendezvous_timeout_s": (0, None, True, False),
    "rollout.vllm.transfer_buffer_bytes": (1 << 20, None, False, False),
}


def _check_ranges(config: DictConfig) -> None:
    for key, (low, high, open_low, open_high) in RANGES.items():
        value = OmegaConf.select(config, key)
        if value is None:
            continue
        below = low is not None and (value <= low if open_low else value < low)
        above = high is not None and (value >= high if open_high else value > high)
        if below or above:
            if high is None and not open_low:
                raise ConfigError(f"config key {key!r} must be at least {low}, got {value}")
            left = "(" if open_low else "["
            right = ")" if open_high else "]"
            span = f"{left}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{right}"
            raise ConfigError(f"config key {key!r} must be in {span}, got {value}")
    betas = list(config.learner.betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"config key 'learner.betas' must be two numbers in [0, 1), got {betas}")


def _load_yaml(path: Path):
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    except OmegaConfBaseException as error:
        raise ConfigError(_describe(error, str(path))) from None


# Keys an older config or checkpoint may still hold, and what replaced them.
RENAMED = {"eval.greedy": "eval.readout: greedy | mean | expected (mean with eval.samples)"}


def _describe(error: OmegaConfBaseException, source: str) -> str:
    key = getattr(error, "full_key", None) or getattr(error, "key", None)
    message = str(error).splitlines()[0]
    if key in RENAMED:
        message = f"{message}; it was replaced by {RENAMED[key]}"
    return f"{source}: invalid config key {key!r}: {message}" if key else f"{source}: {message}"


def _merge(config: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(config, other)
    except OmegaConfBaseException as error:
        raise ConfigError(_describe(error, source)) from None


def _check_vllm(config: DictConfig) -> None:
    if config.rollout.backend != "vllm":
        return
    v = config.rollout.vllm
    if config.trainer.verify_sync and config.rollout.device != "cpu":
        raise ConfigError("config key 'trainer.verify_sync' with rollout.backend vllm compares the engine's greedy "
                          "answers with a transformers copy on CPU: it needs rollout.device cpu (or set it false)")
    if v.weight_sync in ("nccl", "ipc") and (config.rollout.device == "cpu" or config.learner.device == "cpu"):
        raise ConfigError(f"config key 'rollout.vllm.weight_sync' is {v.weight_sync}, which needs GPUs on both "
                          "sides: use object_store on CPU")
    if v.weight_sync == "ipc" and config.placement.mode != "colocated":
        raise ConfigError("config key 'rollout.vllm.weight_sync' is ipc (CUDA IPC, same GPU) but "
                          f"'placement.mode' is {config.placement.mode}: use nccl, or colocated placement")
    if v.weight_sync == "nccl" and config.placement.mode == "colocated":
        raise ConfigError("config key 'rollout.vllm.weight_sync' is nccl but 'placement.mode' is colocated: NCCL "
                          "refuses two ranks of one group on the same GPU; use ipc when colocated")
    if v.weight_sync == "ipc" and config.rollout.num_actors > config.learner.num_ranks:
        raise ConfigError(f"config key 'rollout.vllm.weight_sync' is ipc with rollout.num_actors "
                          f"{config.rollout.num_actors} > learner.num_ranks {config.learner.num_ranks}: an engine on a "
                          "GPU without a learner rank finds no IPC handle for its GPU; use as many rollout actors as "
                          "learner ranks")
    if v.tensor_parallel_size > 1:
        raise ConfigError(f"config key 'rollout.vllm.tensor_parallel_size' is {v.tensor_parallel_size}: each rollout "
                          "actor is placed on one GPU (actors/placement.py) and vLLM refuses a tensor-parallel "
                          "world larger than the GPUs it sees; use 1 and more rollout actors")
    if config.rollout.top_k > 0 or config.rollout.top_p < 1:
        raise ConfigError(f"config keys 'rollout.top_k' {config.rollout.top_k} / 'rollout.top_p' "
                          f"{config.rollout.top_p} truncate sampling: vLLM reports log-probs renormalised over the "
                          "kept tokens, while the learner recomputes them over the whole vocabulary, which would bias "
                          "learner/logprob_gap and the importance weights; use top_k 0 and top_p 1 with "
                          "rollout.backend vllm (the transformers backend reports whole-vocabulary log-probs)")
    if v.sleep and config.placement.mode != "colocated":
        raise ConfigError("config key 'rollout.vllm.sleep' frees the GPU for a colocated learner: it needs "
                          "'placement.mode: colocated'")
    if config.rollout.device == "cpu" and v.kv_cache_bytes is None:
        raise ConfigError("config key 'rollout.vllm.kv_cache_bytes' is not set: on CPU vLLM's KV cache is sized in "
                          "bytes (e.g. 1073741824 for 1 GiB), never as a share of the machine's memory")
    if v.kv_cache_bytes is not None and v.kv_cache_bytes < 1 << 20:
        raise ConfigError(f"config key 'rollout.vllm.kv_cache_bytes' must be at least 1 MiB (1048576), got "
                          f"{v.kv_cache_bytes}")


def _check_pipeline(config: DictConfig) -> None:
    """trainer.max_staleness against the settings that cannot have a batch sampled ahead of the learner."""
    depth = config.trainer.max_staleness
    if depth == 0:
        return
    key = f"config key 'trainer.max_staleness' is {depth}"
    if depth != 1:
        raise ConfigError(f"{key}: 0 (synchronous) or 1 (one step off) are built, deeper pipelines are not")
    if config.placement.mode == "colocated":
        raise ConfigError(f"{key} but 'placement.mode' is colocated: rollout and learner take turns on one device "
                          "there, so nothing would overlap; use placement.mode separate or none, or max_staleness 0")
    if config.algorithm.dynamic_sampling.enabled:
        raise ConfigError(f"{key} but 'algorithm.dynamic_sampling.enabled' is true: its refill rounds would queue "
                          "behind the batch being sampled ahead; turn one of them off")
    if config.algorithm.rollout_is == "none":
        raise ConfigError(f"{key} but 'algorithm.rollout_is' is none: answers sampled one weight version back "
                          "need the importance correction; set algorithm.rollout_is=truncated")


def _check_readout(config: DictConfig) -> None:
    e = config.eval
    if e.readout == "mean" and e.samples < 2:
        raise ConfigError(f"config key 'eval.samples' is {e.samples} with 'eval.readout' mean: the mean of one sampled "
                          "answer is a random draw; give 2 or more, or use readout greedy")
    if e.readout != "mean" and e.samples != 1:
        raise ConfigError(f"config key 'eval.samples' is {e.samples} but 'eval.readout' is {e.readout}, which reads "
                          "one greedy answer: set eval.readout=mean, or eval.samples=1")


def _check_health(config: DictConfig) -> None:
    h = config.health
    for name in (*SIGNAL_METRICS, *VALIDATION_SIGNALS):
        s = h[name]
        if s.window < 1:
            raise ConfigError(f"config key 'health.{name}.window' must be at least 1, got {s.window}")
        if s.min is None and s.max is None and s.spike is None:
            raise ConfigError(f"config key 'health.{name}' sets none of min, max, spike: give at least one")
        if s.spike is not None and (s.spike_window is None or s.spike_window < 1 or s.spike <= 1):
            raise ConfigError(f"config key 'health.{name}.spike' needs spike > 1 and spike_window >= 1, got "
                              f"{s.spike} and {s.spike_window}")


def load_config(config_file: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """base.yaml, then `config_file`, then dotlist `overrides`, checked against the schema."""
    config = OmegaConf.structured(Config)
    OmegaConf.set_struct(config, True)
    if not BASE_CONFIG.is_file():
        raise ConfigError(f"{BASE_CONFIG} not found: preresq reads its defaults from the repository's configs/, "
                          "so install it from a clone with `pip install -e .` (make env does)")
    config = _merge(config, _load_yaml(BASE_CONFIG), str(BASE_CONFIG.name))
    OmegaConf.set_struct(config.data.mix, False)  # its keys are the datasets'
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file() and not path.is_absolute() and (BASE_CONFIG.parents[1] / path).is_file():
            path = BASE_CONFIG.parents[1] / path  # `--config configs/local.yaml` from outside the clone
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        config = _merge(config, _load_yaml(path), str(path))
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            dotlist = OmegaConf.from_dotlist(list(overrides))
        except (yaml.YAMLError, OmegaConfBaseException) as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"command line: an override is not valid ({problem}): {' '.join(overrides)}") from None
        config = _merge(config, dotlist, "command line")
    _check(config)
    _check_stages(config)
    return config


def _check(config: DictConfig) -> None:
    """Every value of a merged config against its choices, ranges and the rules across keys."""
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise ConfigError(f"config keys without a value: {', '.join(missing)}")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(config, key)
        if value not in allowed:
            raise ConfigError(f"config key {key!r} is {value!r}; expected one of {list(allowed)}")
    _check_ranges(config)
    _check_vllm(config)
    _check_health(config)
    _check_readout(config)
    _check_pipeline(config)
    lora = config.learner.lora
    if lora.rank and not (lora.language_targets or lora.vision_targets):
        raise ConfigError("config key 'learner.lora.rank' is set but 'learner.lora.language_targets' and "
                          "'learner.lora.vision_targets' are both empty: the adapters would train nothing")
    if config.learner.comm_backend == "nccl" and config.learner.device == "cpu":
        raise ConfigError("config key 'learner.comm_backend' is nccl but 'learner.device' is cpu: use gloo on CPU")
    if config.trainer.batch_size * config.rollout.group_size % config.learner.num_ranks:
        raise ConfigError(
            "trainer.batch_size x rollout.group_size must divide evenly over learner.num_ranks "
            f"({config.trainer.batch_size} x {config.rollout.group_size} over {config.learner.num_ranks})"
        )


def _check_stages(config: DictConfig) -> None:
    stages = config.trainer.stages
    if not stages:
        return
    total, names = sum(stage.steps for stage in stages), [stage.name for stage in stages]
    if total != config.trainer.steps:
        raise ConfigError(f"config key 'trainer.stages': the stages' steps add up to {total} but trainer.steps is "
                          f"{config.trainer.steps}: make them equal (the lr schedule runs over trainer.steps)")
    if len(set(names)) != len(names) or min(stage.steps for stage in stages) < 1:
        raise ConfigError(f"config key 'trainer.stages': each stage needs a name of its own and at least 1 step, "
                          f"got {[(stage.name, stage.steps) for stage in stages]}")
    for index in range(len(stages)):
        stage_config(config, index)


def stage_config(config: DictConfig, index: int) -> DictConfig:
    """The run's config as stage `index` of trainer.stages sees it (its overrides applied, checked)."""
    stage = config.trainer.stages[index]
    where = f"trainer.stages[{index}] ({stage.name})"
    overrides = OmegaConf.to_container(stage.overrides)
    for key, _ in dotted_items(overrides):
        if OmegaConf.select(config, key, default=MISSING) == MISSING:
            raise ConfigError(f"config key '{where}.overrides.{key}': {key} is not a config key")
        if not (key in STAGE_KEYS or key.startswith(tuple(k for k in STAGE_KEYS if k.endswith(".")))):
            raise ConfigError(f"config key '{where}.overrides.{key}' cannot change between stages; a stage may "
                              f"change only {', '.join(k + '*' if k.endswith('.') else k for k in STAGE_KEYS)}")
    merged = _merge(config, overrides, where)
    try:
        _check(merged)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return merged


def dotted_items(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested dict as (dotted key, value) pairs: {"a": {"b": 1}} -> [("a.b", 1)]."""
    if not isinstance(node, dict):
        return [(prefix[:-1], node)]
    return [pair for name, value in node.items() for pair in dotted_items(value, f"{prefix}{name}.")]


def typed(section):
    """A validated config section as its schema's dataclass (RolloutConfig, ...): what roles are given."""
    return OmegaConf.to_object(section) if isinstance(section, DictConfig) else section


def flatten(config: DictConfig) -> dict[str, Any]:
    """{"trainer.steps": 1600, ...}: the config as MLflow params."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:  # an empty mapping (data.mix: {}) is a value
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(config, resolve=True), "")
    return out
