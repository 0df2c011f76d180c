"""The health guard: after every step, is training still producing a usable policy?

Each signal is one step metric, a threshold and a window: it is breached when the mean over the last
`window` steps crosses the threshold (the KL also when one step exceeds `spike` x its median over the
`spike_window` steps before). A step with a non-finite metric is a breach at once. Validations are judged
too (`VALIDATION_SIGNALS`, window counted in validations): a policy that gives every held-out item one score
has collapsed across images although each group's answers may still differ. The controller
(launch/grpo.py) answers a breach by rolling the learner and the rollout actors back to a snapshot
taken before the breached window (for a validation: the snapshot of the last validation that passed, kept for
this), lowering the learning rate and moving the sampling seed on; after `max_rollbacks` it stops with
`HealthError`. Snapshots are checkpoints (launch/trainer/checkpoint.py) of the learner (weights and optimizer
state) plus the trainer state, kept under `<output_dir>/healthy` while the run is healthy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# signal name in the config -> the step metric it watches
SIGNAL_METRICS = {
    "format_rate": "reward/format",                # share of answers in the exact answer format
    "parse_rate": "answers/parse_rate",            # share whose scores read strictly (as evaluation does)
    "spread": "answers/within_group_spread",       # within-group std of predicted scores: one answer for all
    "item_spread": "answers/item_spread",          # std over the batch's items of their mean predicted score
    "distinct": "answers/distinct_share",          # distinct answer texts / answers
    "nonfinite": "learner/nonfinite",              # share of micro-batches not applied for a non-finite loss/gradient
    "kl": "learner/kl",                            # KL to the reference model
}
# signal name in the config -> the validation result it watches (evaluation/validation.py)
VALIDATION_SIGNALS = {
    "val_spread": "prediction_std",                # std of the held-out predictions: one score for every item
}


def validation_values(results: dict[int, dict], key: str, until: int | None = None) -> list[float]:
    """`key` of each validation in `results` (by step) up to step `until`, oldest first; those without it left out."""
    return [results[s][key] for s in sorted(results)
            if (until is None or s <= until) and results[s].get(key) is not None]


class HealthError(RuntimeError):
    """Training broke and rollbacks did not mend it (or the final policy cannot score enough items)."""


@dataclass(frozen=True)
class Breach:
    signal: str
    step: int
    value: float
    window: int       # steps the breached judgement looked at (a safe snapshot is older than these)
    message: str


class HealthGuard:
    """Judges each step's metrics against the `health` config section; keeps its windows of values."""

    def __init__(self, cfg, recent: list[dict] | None = None):
        self.cfg = cfg
        self.signals = {name: getattr(cfg, name) for name in SIGNAL_METRICS}
        self.keep = max(max(s.window, s.spike_window or 0) for s in self.signals.values()) + 1
        self.recent: list[dict] = list(recent or [])  # [{"step": n, metric: value, ...}], oldest first
        self.enabled = cfg.enabled

    def state(self) -> list[dict]:
        return list(self.recent)

    def forget_after(self, step: int) -> None:
        """After a rollback to `step`: later steps' values belong to the abandoned trajectory."""
        self.recent = [r for r in self.recent if r["step"] <= step]

    def check(self, step: int, metrics: dict[str, float]) -> Breach | None:
        if not self.enabled:
            return None
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        if bad:
            return Breach("nonfinite", step, float("nan"), 1,
                          f"step {step}: non-finite metrics {bad}")
        row = {"step": step, **{m: metrics[m] for m in SIGNAL_METRICS.values() if m in metrics}}
        self.recent = (self.recent + [row])[-self.keep:]
        for name, signal in self.signals.items():
            breach = self._judge(name, signal, step)
            if breach:
                return breach
        return None

    def check_validation(self, step: int, results: dict[int, dict]) -> Breach | None:
        """The validation of `step` against VALIDATION_SIGNALS, each over its last `window` validations
        (`results`: validation results by step, this one included, all the others passed). The breach's window
        reaches back to the last validation that passed, so that the rollback lands on its snapshot."""
        if not self.enabled or step == 0:  # the starting point is what it is: there is nothing before it
            return None
        passed = max((s for s in results if s < step), default=0)
        for name, key in VALIDATION_SIGNALS.items():
            if results[step].get(key) is None:
                continue
            values = validation_values(results, key, until=step)
            armed = self._armed_from(name, values[:-1])
            if armed is None:
                continue
            breach = self._judge_values(name, getattr(self.cfg, name), step, values[armed:], "validations")
            if breach:
                return Breach(name, step, breach.value, step - passed - 1,
                              f"validation at step {step}: {breach.message}")
        return None

    def _armed_from(self, name: str, before: list[float]) -> int | None:
        """Where a validation signal's judging starts among its earlier values (oldest first): at the first that
        met its bounds (0 when there are none yet); None while none of them has. A model that has never told the
        held-out items apart (a random one gives every item one score) cannot collapse, and a rollback would
        only redo the same steps."""
        s = getattr(self.cfg, name)
        if not before:
            return 0
        return next((i for i, v in enumerate(before)
                     if (s.min is None or v >= s.min) and (s.max is None or v <= s.max)), None)

    def unarmed_validation_signals(self, results: dict[int, dict]) -> dict[str, str]:
        """The validation signals the next validation will not be judged on, each with why: none of `results`
        (validations by step) has met the signal's bounds yet."""
        if not self.enabled:
            return {}
        unarmed = {}
        for name, key in VALIDATION_SIGNALS.items():
            values = validation_values(results, key)
            if values and self._armed_from(name, values) is None:
                s = getattr(self.cfg, name)
                unarmed[name] = (f"health.{name} is judged from the first validation within its bounds "
                                 f"({s.min}..{s.max}); none has been yet (val/{key} is {values[0]:.3g} at the "
                                 f"start)")
        return unarmed

    def _judge(self, name: str, s, step: int) -> Breach | None:
        metric = SIGNAL_METRICS[name]
        return self._judge_values(name, s, step, [r[metric] for r in self.recent if metric in r], "steps")

    def _judge_values(self, name: str, s, step: int, values: list[float], unit: str) -> Breach | None:
        metric = SIGNAL_METRICS.get(name) or f"val/{VALIDATION_SIGNALS[name]}"
        if not values:
            return None
        if len(values) >= s.window:
            mean = sum(values[-s.window:]) / s.window
            over = f"mean over the last {s.window} {unit}" if s.window > 1 else f"this {unit[:-1]}"
            if s.min is not None and mean < s.min:
                return Breach(name, step, mean, s.window,
                              f"{metric} {over} is {mean:.3g}, below health.{name}.min = {s.min}")
            if s.max is not None and mean > s.max:
                return Breach(name, step, mean, s.window,
                              f"{metric} {over} is {mean:.3g}, above health.{name}.max = {s.max}")
        if s.spike is not None and len(values) > s.spike_window:
            before = sorted(values[-s.spike_window - 1:-1])
            median = before[len(before) // 2]
            if values[-1] > s.spike * max(median, s.spike_floor):
                return Breach(name, step, values[-1], 1,
                              f"{metric} jumped to {values[-1]:.3g}, over health.{name}.spike = {s.spike} x its "
                              f"median {median:.3g} over the {s.spike_window} {unit} before")
        return None
