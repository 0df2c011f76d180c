"""A test hook: role calls made to take a fixed wall time, so that the overlap of rollout and learner
(trainer.max_staleness) is measured on calls of known length. PRERESQ_CALL_SECONDS="generate=0.3,train_step=0.3"
in the environment the Ray workers start with pads each named call to at least that many seconds; unset, nothing."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

VARIABLE = "PRERESQ_CALL_SECONDS"


def floor_seconds(call: str) -> float:
    """The wall time PRERESQ_CALL_SECONDS asks of `call` (0: none); a malformed value is named."""
    floors = {}
    for part in filter(None, os.environ.get(VARIABLE, "").split(",")):
        name, _, seconds = part.partition("=")
        try:
            floors[name.strip()] = float(seconds)
        except ValueError:
            raise ValueError(f"{VARIABLE}={os.environ[VARIABLE]!r}: {part!r} is not name=seconds") from None
    return floors.get(call, 0.0)


@contextmanager
def call_floor(call: str) -> Iterator[None]:
    """The body, then a sleep for what is left of `call`'s floor."""
    floor, began = floor_seconds(call), time.monotonic()
    yield
    left = floor - (time.monotonic() - began)
    if left > 0:
        time.sleep(left)


def floored(call: str) -> Callable:
    """A method decorator: the method's calls padded to `call`'s floor."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def padded(*args, **kwargs):
            with call_floor(call):
                return method(*args, **kwargs)

        return padded

    return decorate
