"""Hooks on the roles' main calls (RolloutWorker.generate, LearnerRank.train_step) for tests and benchmarks,
read from the environment the Ray workers start with; unset, they do nothing.

PRERESQ_CALL_SECONDS="generate=0.3,train_step=0.3" pads each named call to at least that many seconds, so that
the overlap of rollout and learner (trainer.max_staleness) is tested on calls of known length.
PRERESQ_CALL_LOG=<folder> appends each call's wall-clock start and end (time.time(), seconds) as a JSON line to
<folder>/<call>-<pid>.jsonl, from which benchmarks/async_overlap.py reads each role's busy share."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

FLOORS = "PRERESQ_CALL_SECONDS"
LOG = "PRERESQ_CALL_LOG"


def floor_seconds(call: str) -> float:
    """The wall time PRERESQ_CALL_SECONDS asks of `call` (0: none); a malformed value is named."""
    floors = {}
    for part in filter(None, os.environ.get(FLOORS, "").split(",")):
        name, _, seconds = part.partition("=")
        try:
            floors[name.strip()] = float(seconds)
        except ValueError:
            raise ValueError(f"{FLOORS}={os.environ[FLOORS]!r}: {part!r} is not name=seconds") from None
    return floors.get(call, 0.0)


def hooked(call: str) -> Callable:
    """A method decorator: the method's calls padded to `call`'s floor and logged, where the environment asks."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapped(*args, **kwargs):
            floor, began, start = floor_seconds(call), time.monotonic(), time.time()
            try:
                return method(*args, **kwargs)
            finally:
                left = floor - (time.monotonic() - began)
                if left > 0:
                    time.sleep(left)
                if os.environ.get(LOG):
                    folder = Path(os.environ[LOG])
                    folder.mkdir(parents=True, exist_ok=True)
                    with (folder / f"{call}-{os.getpid()}.jsonl").open("a") as log:
                        log.write(json.dumps({"start": start, "end": time.time()}) + "\n")

        return wrapped

    return decorate
