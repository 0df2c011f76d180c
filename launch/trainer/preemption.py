"""A run asked to stop (SIGTERM: `ray job stop`, a pod's eviction) stops cleanly: what it learned is checkpointed.

Work that can be redone exactly is abandoned at once (drawing the batch, generating, scoring, validating); a
learner update under way finishes, since abandoning it half-applied is what cannot be redone. The controller then
writes a checkpoint, marks the MLflow run KILLED and exits 143; the same command resumes from that checkpoint.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Preempted(Exception):
    """Raised where the run may stop at once, after a SIGTERM."""


class StopRequest:
    """Whether, and since when, the run was asked to stop; `abandonable()` marks the work a request ends at once."""

    def __init__(self):
        self.since: float | None = None  # time.monotonic() of the first SIGTERM
        self._abandonable = False

    def install(self) -> None:
        """Replace the handler Ray's driver installs (sys.exit at once, nothing saved)."""
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.since is None:
            self.since = time.monotonic()
            print("SIGTERM: stopping at the next safe point (a learner update under way finishes), then a "
                  "checkpoint", flush=True)
        if self._abandonable:
            raise Preempted("SIGTERM")

    @property
    def requested(self) -> bool:
        return self.since is not None

    def seconds_since(self) -> float:
        return time.monotonic() - self.since if self.since is not None else 0.0

    def check(self) -> None:
        if self.requested:
            raise Preempted("SIGTERM")

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """Inside: a SIGTERM raises Preempted at once (also when one came before)."""
        self.check()
        self._abandonable = True
        try:
            yield
        finally:
            self._abandonable = False
