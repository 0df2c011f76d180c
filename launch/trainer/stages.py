"""The run's stages (trainer.stages): which stage a step belongs to, and the config its step runs with.

A stage is a span of steps with its own values of the keys that may change mid-run (launch/trainer/config.
STAGE_KEYS: what the prompts ask, sampling, the reward, which groups are kept). The stage of a step follows from
the step alone, so a resume or a rollback across a boundary lands in the right stage by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from launch.trainer.config import dotted_items, stage_config


@dataclass(frozen=True)
class Stage:
    number: int  # 1-based
    name: str
    first_step: int
    last_step: int
    cfg: object  # the run's config with this stage's overrides
    changes: str  # its overrides as key=value, for the log

    def announce(self, count: int) -> str:
        return (f"stage {self.number}/{count} ({self.name}): steps {self.first_step}-{self.last_step}"
                + (f", {self.changes}" if self.changes else ""))


def run_stages(cfg) -> list[Stage]:
    """Stages in order (one of all steps, with the config as it is, when trainer.stages is empty)."""
    if not cfg.trainer.stages:
        return [Stage(1, "all", 1, cfg.trainer.steps, cfg, "")]
    stages, first = [], 1
    for index, stage in enumerate(cfg.trainer.stages):
        changes = ", ".join(f"{k}={v}" for k, v in dotted_items(OmegaConf.to_container(stage.overrides)))
        stages.append(Stage(index + 1, stage.name, first, first + stage.steps - 1, stage_config(cfg, index),
                            changes))
        first += stage.steps
    return stages


def stage_at(stages: list[Stage], step: int) -> Stage:
    """The stage step `step` belongs to (step 0, before any: the first)."""
    return next((s for s in stages if step <= s.last_step), stages[-1])
