"""Calling actors with bounds: every remote call has a timeout that names its option, and a call to an actor
that Ray restarted is redone a bounded number of times. A stuck or dead role is a RoleError, never a hang."""

from __future__ import annotations

import time
from collections.abc import Callable

import ray


class RoleError(RuntimeError):
    """A role's actor died for good or did not answer in time; names the role and the option to change."""


def bounded_get(refs, timeout_s: float, role: str, option: str):
    """ray.get(refs) within timeout_s seconds; an actor's error is raised as soon as it arrives (a dead
    rank does not wait for the ranks stuck in its collective). RoleError on a timeout."""
    single = not isinstance(refs, list)
    pending, deadline = ([refs] if single else list(refs)), time.monotonic() + timeout_s
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            raise RoleError(f"the {role} did not answer within {timeout_s:g} s ({option}): it is stuck or slower "
                            f"than that; raise {option} if the work is just slow, then rerun the same command "
                            "(it resumes from the newest checkpoint)")
        ray.get(ready)  # raises the actor's error now
    values = ray.get([refs] if single else list(refs))
    return values[0] if single else values


def wait_alive(actor, timeout_s: float, role: str, option: str) -> None:
    """Returns once a restarting actor answers again (calls to it fail while Ray restarts it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            bounded_get(actor.__ray_ready__.remote(), max(1.0, deadline - time.monotonic()), role, option)
            return
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise RoleError(f"the {role} was not back within {timeout_s:g} s of its restart ({option})") from None
            time.sleep(0.5)


def retrying(call: Callable[[], object], restarts: int, role: str, option: str, on_restart=None):
    """call() (a bounded get), redone after the actor it waits on died and Ray restarted it, at most
    `restarts` times; on_restart() first readies the new actor (e.g. gives it the current weights)."""
    for attempt in range(restarts + 1):
        try:
            return call()
        except ray.exceptions.RayActorError as error:
            if attempt == restarts:
                raise RoleError(f"the {role} died {attempt + 1} times ({type(error).__name__}); {option} = "
                                f"{restarts} restarts are used up. Its log is in Ray's session folder "
                                "(/tmp/ray/session_latest/logs); rerun the same command to resume") from None
            print(f"{role} died ({type(error).__name__}); Ray restarts it and its work is redone "
                  f"[restart {attempt + 1} of {restarts}]", flush=True)
            if on_restart is not None:
                on_restart()
