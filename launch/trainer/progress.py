"""How a run shows its steps: on a terminal one live bar (steps done, step rate, ETA, the step's main numbers) with
every other line printed above it; elsewhere (a log file, `ray job submit`, tests) the plain `step N/M ...` lines,
one every `trainer.log_every` steps."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

from launch.trainer.metrics import progress_line


class _AboveTheBar:
    """sys.stdout while the bar shows: each write clears the bar, writes, and draws the bar again below it."""

    def __init__(self, stream, bar: tqdm):
        self.stream, self.bar, self.lock = stream, bar, threading.Lock()

    def write(self, text: str) -> int:
        with self.lock, self.bar.external_write_mode(file=self.stream):
            return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


class StepProgress:
    """steps: trainer.steps; start: the step a resumed run continues after; terminal: None asks stdout."""

    def __init__(self, steps: int, start: int, terminal: bool | None = None):
        self.steps = steps
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self.bar = None
        self._stdout = sys.stdout
        if self.terminal:
            self.bar = tqdm(total=steps, initial=start, unit="step", file=self._stdout, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
                                       "{postfix}")
            sys.stdout = _AboveTheBar(self._stdout, self.bar)

    def step(self, step: int, metrics: dict, eta: str, printed: bool) -> None:
        """After `step`: the bar moves (its numbers are this step's); without a terminal, the step's line when
        `printed` (a trainer.log_every step)."""
        if self.bar is None:
            if printed:
                print(f"{progress_line(step, self.steps, metrics)} eta {eta}", flush=True)
            return
        self.bar.set_postfix_str(f"reward {metrics['reward/total']:.3f} fmt {metrics['reward/format']:.2f} "
                                 f"kl {metrics.get('learner/kl', float('nan')):.4f}", refresh=False)
        self.bar.n = step  # a rollback or a relaunch goes back: the bar follows
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            sys.stdout = self._stdout
            self.bar.close()
            self.bar = None
