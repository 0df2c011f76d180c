"""A run asked to stop (SIGTERM: `ray job stop`, a pod's eviction; SIGINT: Ctrl-C) stops cleanly: what it learned
is checkpointed.

Work that can be redone exactly is abandoned at once (drawing the batch, generating, scoring, validating); a
learner update under way finishes, since abandoning it half-applied is what cannot be redone. The controller then
writes a checkpoint, marks the MLflow run KILLED and exits 143 (SIGTERM) or 130 (SIGINT); the same command resumes
from that checkpoint. A second Ctrl-C aborts at once, saving nothing more.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Preempted(Exception):
    """Raised where the run may stop at once, after a SIGTERM or a first SIGINT (`signal_name`)."""

    def __init__(self, signal_name: str, message: str | None = None):
        super().__init__(message or signal_name)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports a process that signal ended."""
        return 128 + signal.Signals[self.signal_name].value


class StopRequest:
    """Whether, and since when, the run was asked to stop; `abandonable()` marks the work a request ends at once."""

    def __init__(self):
        self.since: float | None = None  # time.monotonic() of the first SIGTERM or SIGINT
        self.signal = "SIGTERM"
        self._abandonable = False

    def install(self) -> None:
        """Replace the handler Ray's driver installs for SIGTERM (sys.exit at once, nothing saved) and Python's
        KeyboardInterrupt for the first Ctrl-C. The request is recorded in the handler, so it holds wherever the
        signal lands: a KeyboardInterrupt raised inside a callback whose exceptions are ignored would be lost, and
        the run would go on."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.since is None:
            self.since, self.signal = time.monotonic(), name
            again = "; Ctrl-C again aborts at once" if signum == signal.SIGINT else ""
            print(f"{name}: stopping at the next safe point (a learner update under way finishes), then a "
                  f"checkpoint{again}", flush=True)
        elif signum == signal.SIGINT and self.signal == "SIGINT":
            raise KeyboardInterrupt
        if self._abandonable:
            raise Preempted(self.signal)

    @property
    def requested(self) -> bool:
        return self.since is not None

    def seconds_since(self) -> float:
        return time.monotonic() - self.since if self.since is not None else 0.0

    def check(self) -> None:
        if self.requested:
            raise Preempted(self.signal)

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """Inside: a stop request raises Preempted at once (also when one came before)."""
        self.check()
        self._abandonable = True
        try:
            yield
        finally:
            self._abandonable = False
