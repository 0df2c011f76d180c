"""A training run as the loop sees it: its config, data, roles, stores and record, and what it does between
steps (validate, checkpoint, log). Built by launch/trainer/setup.py, closed by launch/trainer/finish.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from actors.lr_schedule import learning_rate
from evaluation.validation import evaluate
from launch.trainer.checkpoint import CheckpointStore
from launch.trainer.health import Breach, HealthGuard
from launch.trainer.metrics import CURVES
from launch.trainer.pipeline import SampledBatch, restored
from launch.trainer.preemption import Preempted, StopRequest
from launch.trainer.progress import StepProgress
from launch.trainer.roles import Roles
from launch.trainer.run_record import RunRecord
from launch.trainer.run_state import sampling_seed, trainer_state
from launch.trainer.sample_tables import SampleTables
from launch.trainer.stages import Stage, run_stages, stage_at
from launch.trainer.tracking import Tracker
from qadata.requests import RunData
from qadata.sampler import BatchSampler, MixedSampler
from rollouts.backend import SamplingSettings


@dataclass
class TrainingRun:
    cfg: object  # the validated config (launch/trainer/config.py)
    data: RunData
    roles: Roles
    tracker: Tracker
    checkpoints: CheckpointStore
    snapshots: CheckpointStore
    sampler: BatchSampler | MixedSampler  # by data.mix
    guard: HealthGuard
    record: RunRecord
    start_step: int  # 0, or the step a resumed run continues after
    startup_seconds: dict[str, float] = field(default_factory=dict)  # time/startup/* phases
    started: float = field(default_factory=time.time)
    stop: StopRequest = field(default_factory=StopRequest)
    step: int = 0  # the last step done (and logged)
    checkpointed: float = field(default_factory=time.monotonic)  # when the last checkpoint was written
    lock: object = None  # the exclusive hold on run.output_dir (launch/trainer/setup.claim_output_dir)
    steps_began: float = field(default_factory=time.time)  # when the first step of this process began
    samples: SampleTables | None = None  # answers with their pictures (tracking.samples_every)
    progress: StepProgress | None = None  # the step bar or lines, from the first step on
    resolved_stages: list[Stage] = field(default_factory=list)  # trainer.stages, resolved (launch/trainer/stages.py)
    ahead: SampledBatch | None = None  # step + 1's batch, sampled while step's was learned (trainer.max_staleness)

    def __post_init__(self):
        self.resolved_stages = run_stages(self.cfg)

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.run.output_dir)

    @property
    def policy_dir(self) -> Path:
        return self.output_dir / "policy"

    def learning_rate(self, step: int) -> float:
        """The schedule's lr at `step`, cut by health.lr_factor for each rollback so far."""
        c = self.cfg.learner
        return learning_rate(step, c.lr, self.cfg.trainer.steps, c.lr_schedule, c.warmup_steps, c.min_lr_ratio,
                             self.record.lr_scale())

    def stage(self, step: int) -> Stage:
        """The stage `step` belongs to; its `cfg` is the config the step runs with."""
        return stage_at(self.resolved_stages, step)

    def sampling(self, step: int, round_: int = 0) -> SamplingSettings:
        """The step's G answers per item (in dynamic sampling's `round_`); a rollback moves the seed on, so a
        redone step draws other answers."""
        seed = sampling_seed(self.cfg.run.seed, step, len(self.record.rollbacks), round_)
        return SamplingSettings.training(self.stage(step).cfg.rollout, seed)

    def samples_ahead(self, step: int) -> bool:
        """Whether step + 1's batch is answered while `step`'s is learned (launch/trainer/pipeline.py)."""
        return self.cfg.trainer.max_staleness > 0 and step < self.cfg.trainer.steps

    def batch_sampled_ahead(self, step: int) -> SampledBatch | None:
        """`step`'s batch when the step before sampled it, else None."""
        if self.ahead is not None and self.ahead.step != step:
            raise RuntimeError(f"the batch sampled ahead is step {self.ahead.step}'s, but step {step} is next")
        return self.ahead

    def draw(self, step: int, size: int) -> tuple[list, list[float]]:
        """The next `size` readable training items' requests and MOS; under data.question pool each asks the
        wording its item and the step's sampling seed pick."""
        pool = self.stage(step).cfg.data.question == "pool"
        return self.data.batch(self.sampler, size, self.sampling(step).seed if pool else None)

    def log_step(self, step: int, metrics: dict) -> None:
        self.record.curves.append({"step": step, **{k: metrics[k] for k in CURVES if k in metrics}})
        logged = step % self.cfg.trainer.log_every == 0
        if logged:
            self.tracker.log_metrics(metrics, step)
        if self.progress is None:
            self.progress = StepProgress(self.cfg.trainer.steps, step - 1)
        self.progress.step(step, metrics, self.eta(step), logged)

    def eta(self, step: int) -> str:
        """The time left, at this run's mean step time so far (validations and checkpoints included)."""
        done = step - self.start_step
        left = (time.time() - self.steps_began) / max(done, 1) * (self.cfg.trainer.steps - step)
        return f"{int(left // 60)}m{int(left % 60):02d}s"

    def validation_due(self, step: int) -> bool:
        """Every trainer.eval_every steps and after the last one (judged by the health guard either way)."""
        return step % self.cfg.trainer.eval_every == 0 or step == self.cfg.trainer.steps

    def due(self, step: int, every: int) -> bool:
        """A periodic save or validation after `step` (the last step has its own, in finish)."""
        return step % every == 0 and step < self.cfg.trainer.steps

    def snapshot_due(self, step: int) -> bool:
        """A health snapshot every health.snapshot_every steps, unless the step's validation took one."""
        health = self.cfg.health
        return health.enabled and self.due(step, health.snapshot_every) and step not in self.snapshots.steps()

    def checkpoint_due(self, step: int) -> bool:
        """Every trainer.checkpoint_every steps, and when trainer.checkpoint_every_s passed since the last one."""
        every_s = self.cfg.trainer.checkpoint_every_s
        overdue = every_s is not None and time.monotonic() - self.checkpointed >= every_s
        return self.due(step, self.cfg.trainer.checkpoint_every) or (overdue and step < self.cfg.trainer.steps)

    @contextmanager
    def redoable(self) -> Iterator[None]:
        """Work a SIGTERM abandons at once (launch/trainer/preemption.py); the data position goes back to where it
        began, so that the resumed run redoes the same step."""
        position = self.sampler.state()
        try:
            with self.stop.abandonable():
                yield
        except Preempted:
            self.sampler.load_state(position)
            raise

    def restore(self, folder: Path | None, state: dict | None) -> None:
        """The learner, the sampler, the RNG, the record, the health window and the skipped media as the checkpoint
        in `folder` (with its `state`) left them, or as the run began (None); the rollout actors given the learner's
        weights. The relaunches so far are kept: they happened whatever the checkpoint says."""
        relaunches = self.record.relaunches
        if folder is None:
            self.sampler = self.data.sampler(self.cfg.run.seed)
            torch.manual_seed(self.cfg.run.seed)
            self.record = RunRecord(evals={k: v for k, v in self.record.evals.items() if k == 0})
            self.guard, self.step, self.ahead = HealthGuard(self.cfg.health), 0, None
        else:
            self.roles.learners.load_checkpoint(str(folder / "deepspeed"), tag="state")
            self.sampler.load_state(state["sampler"])
            torch.set_rng_state(torch.tensor(state["rng"]["torch"], dtype=torch.uint8))
            self.record = RunRecord.from_state(state["history"])
            self.guard = HealthGuard(self.cfg.health, state.get("health_window"))
            self.data.skipped.update(state.get("skipped_media", {}))
            self.step = state["step"]
            self.ahead = restored(self, state.get("ahead"))
        self.record.relaunches = relaunches or self.record.relaunches
        self.roles.weights.push(self.step)

    def validate(self, step: int) -> dict:
        """Held-out metrics of the current weights (abandoned at once on a SIGTERM: redone after the resume)."""
        cfg = self.cfg
        sampling = SamplingSettings.evaluation(cfg.eval, cfg.rollout, cfg.run.seed)
        with self.stop.abandonable():
            result, predictions = evaluate(self.roles.rollouts, self.data.eval, self.data.load, self.data.task_of,
                                           sampling, cfg.eval.batch_size)
        self.record.evals[step] = result
        self.tracker.log_metrics({f"val/{k}": v for k, v in result.items() if v is not None}, step)
        print(f"step {step} validation: SRCC {rounded(result['srcc'])} PLCC {rounded(result['plcc'])} "
              f"({int(result['scored'])} of "
              f"{int(result['items'])} items scored, {int(result['parse_failures'])} answers unparsed, "
              f"{int(result['unreadable'])} unreadable)" + per_dataset(result), flush=True)
        if self.samples:
            self.samples.validation(step, self.data.eval, predictions, self.data.load)
        return result

    def judged_validation(self, step: int) -> Breach | None:
        """validate(step), judged by the health guard; one that passes is snapshotted, and that snapshot is kept
        until the next passes, so that a later collapse can roll back to it."""
        self.validate(step)
        breach = self.guard.check_validation(step, self.record.evals)
        if not breach and self.cfg.health.enabled and step not in self.snapshots.steps():
            self.save(self.snapshots, step)
        return breach

    def pending_validation(self) -> Breach | None:
        """The judged validation of the last step done, when it was due and a stop (a SIGTERM, a lost learner
        rank) came before it was recorded."""
        step = self.step
        if step > 0 and self.validation_due(step) and step not in self.record.evals:
            return self.judged_validation(step)
        return None

    def save(self, store: CheckpointStore, step: int) -> None:
        """The learner's DeepSpeed state and the trainer state after `step` into `store` (a snapshot store also
        keeps the last validated step's)."""
        last_validated = max(self.record.evals, default=None) if store is self.snapshots else None
        store.save(step, lambda folder: self.roles.learners.save_checkpoint(folder, tag="state"),
                   trainer_state(self, step), also_keep=last_validated)
        if store is self.checkpoints:
            self.checkpointed = time.monotonic()


def per_dataset(result: dict) -> str:
    """'; kadid10k SRCC 0.81, koniq SRCC 0.77' when the evaluation set has several datasets."""
    names = sorted(key[: -len("/srcc")] for key in result if key.endswith("/srcc"))
    return "".join(f"{'; ' if i == 0 else ', '}{name} SRCC {rounded(result[f'{name}/srcc'])}"
                   for i, name in enumerate(names))


def rounded(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"
