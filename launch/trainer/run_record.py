"""What a run has done so far: the record the loop, the health rollback, checkpoints and the summary share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Rollback:
    """One answer of the health guard: breached at `step`, rolled back to `to_step`, lr scaled by `lr_scale`."""

    step: int
    signal: str
    value: float
    message: str
    to_step: int
    lr_scale: float


@dataclass(frozen=True)
class Relaunch:
    """A learner group started again: lost after step `step` (`error`), resumed from step `to_step`'s checkpoint
    (0: the model folder) `seconds` after the loss."""

    step: int
    error: str
    to_step: int
    seconds: float


@dataclass
class RunRecord:
    """curves: each step's curve metrics ({"step": n, metric: value}, launch/trainer/metrics.CURVES); evals:
    validation results by step; rollbacks, relaunches: in order; failure: what ended the run, if something did."""

    curves: list[dict] = field(default_factory=list)
    evals: dict[int, dict] = field(default_factory=dict)
    rollbacks: list[Rollback] = field(default_factory=list)
    relaunches: list[Relaunch] = field(default_factory=list)
    failure: str | None = None

    def lr_scale(self) -> float:
        """The learning rate's factor after the rollbacks so far (each multiplies it by health.lr_factor)."""
        return self.rollbacks[-1].lr_scale if self.rollbacks else 1.0

    def forget_after(self, step: int) -> None:
        """After a rollback to `step`: later steps and validations belong to the abandoned trajectory."""
        self.curves = [s for s in self.curves if s["step"] <= step]
        self.evals = {k: v for k, v in self.evals.items() if k <= step}

    def to_state(self) -> dict:
        """JSON for a checkpoint (validations keyed by the step as text)."""
        return {"steps": self.curves, "eval": {str(k): v for k, v in self.evals.items()},
                "rollbacks": [asdict(r) for r in self.rollbacks], "relaunches": [asdict(r) for r in self.relaunches]}

    @classmethod
    def from_state(cls, state: dict) -> RunRecord:
        return cls(list(state["steps"]), {int(k): v for k, v in state["eval"].items()},
                   [Rollback(**r) for r in state.get("rollbacks", [])],
                   [Relaunch(**r) for r in state.get("relaunches", [])])
