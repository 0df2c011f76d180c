"""The roles' actor groups as the controller calls them: the learner ranks, the rollout actors, the reward actor.

Every call is bounded by an option (actors/calls.py): a stuck actor is an error naming the role and the option,
never a hang. Rollout and reward actors are restarted by Ray after a death (`max_restarts`); the caller gives a
restarted rollout actor the current weights and redoes its part (`RolloutGroup`). A learner rank's death is a
LearnerLost: its ZeRO shards and the collective are gone, so the controller starts a new group from a checkpoint.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import ray

from actors.calls import RoleError, bounded_get, retrying, wait_alive
from actors.learner import LearnerRank, LearnerSettings
from actors.placement import Slot, actor_options
from actors.reward import RewardWorker
from actors.rollout import RolloutWorker
from actors.weight_transfer import TransferSettings

# How long Ray may take to tell that a node's actors are gone (a raylet's missed heartbeats), when a survivor's
# failed collective is the first news of a death.
DEATH_NOTICE_S = 60.0


class LearnerLost(RoleError):
    """A learner rank died (its process, or its node): the group's shards and collective are gone with it."""


class LearnerGroup:
    """N LearnerRank actors forming one DeepSpeed data-parallel group, placed by `slots` (one per rank).

    The ranks are placed within placement_timeout_s (placement.timeout_s: after a node's loss, until its bundle
    finds a node again). Calls are bounded by learner.step_timeout_s (a step, a gather) or
    learner.checkpoint_timeout_s (start-up, checkpoints); a rank's death is a LearnerLost."""

    def __init__(self, settings: LearnerSettings, step_timeout_s: float, checkpoint_timeout_s: float,
                 slots: list[Slot], group=None, placement_timeout_s: float | None = None):
        self.step_timeout_s, self.checkpoint_timeout_s = step_timeout_s, checkpoint_timeout_s
        self.bounds = {"step": (step_timeout_s, "learner.step_timeout_s"),
                       "checkpoint": (checkpoint_timeout_s, "learner.checkpoint_timeout_s"),
                       "placement": (placement_timeout_s, "placement.timeout_s")}
        actor = ray.remote(LearnerRank)
        world = len(slots)
        self.ranks = [actor.options(**actor_options(slot, group)).remote(settings, rank, world)
                      for rank, slot in enumerate(slots)]
        try:
            if placement_timeout_s is not None:
                self._get([r.__ray_ready__.remote() for r in self.ranks], "placement")
            addr, port = self._get(self.ranks[0].address.remote(), "checkpoint")
            self.ranks_info = self._get([r.setup.remote(addr, port) for r in self.ranks], "checkpoint")
        except LearnerLost:  # e.g. placed on a node that Ray had not yet found dead
            self.end()
            raise

    def _get(self, refs, bound: str):
        """ray.get within the bound named (step | checkpoint | placement); a rank's death is a LearnerLost."""
        timeout_s, option = self.bounds[bound]
        try:
            return bounded_get(refs, timeout_s, "learner group", option)
        except ray.exceptions.RayActorError as error:
            raise LearnerLost(f"a learner rank died ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                              "the ZeRO group cannot go on without its shards") from None
        except ray.exceptions.RayTaskError:
            # A survivor's collective often fails (connection reset) before the dead rank's own error arrives.
            dead = self._dead_ranks()
            if dead:
                raise LearnerLost(f"a learner rank died (rank {', '.join(map(str, dead))}); the ZeRO group cannot go "
                                  "on without its shards") from None
            raise

    def _dead_ranks(self) -> list[int]:
        """The ranks that do not answer because they are gone, as Ray knows within DEATH_NOTICE_S (a live rank still
        busy in a collective does not answer either, but is not counted)."""
        probes = [rank.__ray_ready__.remote() for rank in self.ranks]
        pending, dead, deadline = list(probes), [], time.monotonic() + DEATH_NOTICE_S
        while pending and not dead:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                ray.get(ready)
            except ray.exceptions.RayActorError:
                dead.append(probes.index(ready[0]))
        return dead

    def end(self) -> None:
        """Every rank ended at once (survivors of a lost rank wait in its collective until killed)."""
        for rank in self.ranks:
            ray.kill(rank, no_restart=True)

    def train_step(self, shards: list[list], lr: float, temperature: float | None = None) -> list[dict]:
        return self._get([r.train_step.remote(shard, lr, temperature) for r, shard in zip(self.ranks, shards)],
                         "step")

    def full_weights(self) -> ray.ObjectRef:
        """ObjectRef of rank 0's gathered weights (every rank takes part in the gather)."""
        refs = [r.full_weights.remote() for r in self.ranks]
        self._get(refs, "step")
        return refs[0]

    def weights_digest(self) -> str:
        return self._get([r.weights_digest.remote() for r in self.ranks], "step")[0]

    def delivery_record(self) -> dict:
        """Rank 0's record of what the latest sync sent (LearnerRank.delivery_record)."""
        return self._get(self.ranks[0].delivery_record.remote(), "step")

    def connect_rollouts(self, settings: TransferSettings, rollouts: list) -> None:
        """vLLM's weight transfer from rank 0 to the rollout engines (nccl | ipc), which must be loaded already.
        Bounded by the rendezvous's own timeout (the ranks wait within it) plus the learner's start-up bound."""
        address, port = self._get(self.ranks[0].address.remote(), "checkpoint")
        self._transfer([r.connect_rollouts.remote(settings, rollouts, address, port) for r in self.ranks],
                       settings.rendezvous_timeout_s + self.checkpoint_timeout_s, "rollout.vllm.rendezvous_timeout_s")

    def send_weights(self, timeout_s: float) -> None:
        self._transfer([r.send_weights.remote() for r in self.ranks], timeout_s, "rollout.sync_timeout_s")

    def _transfer(self, refs: list, timeout_s: float, option: str) -> None:
        """A call into vLLM's weight transfer, bounded by `option`; a death on either side is a RoleError."""
        try:
            bounded_get(refs, timeout_s, "weight transfer", option)
        except ray.exceptions.RayActorError as error:
            raise RoleError(f"a learner rank or rollout engine died in vLLM's weight transfer ({error}); rerun the "
                            "same command to resume") from None

    def save_checkpoint(self, folder: str, tag: str) -> dict[str, dict]:
        """The group's DeepSpeed checkpoint in `folder`; the files every rank wrote, hashed by the rank."""
        return {path: entry for files in self._get([r.save_checkpoint.remote(folder, tag) for r in self.ranks],
                                                  "checkpoint") for path, entry in files.items()}

    def see(self, folder: Path) -> None:
        """Every rank reads a probe file the controller writes into `folder`, or a RoleError names the nodes that
        cannot: their checkpoint files would land in a folder the controller never sees."""
        probe = folder / f".probe-{uuid.uuid4().hex}"
        probe.write_text(probe.name)
        try:
            seen = self._get([r.sees.remote(str(probe), probe.name) for r in self.ranks], "checkpoint")
        finally:
            probe.unlink(missing_ok=True)
        blind = [f"rank {rank} on {node}" for rank, (ok, node) in enumerate(seen) if not ok]
        if blind:
            raise RoleError(f"learner {', '.join(blind)} cannot see {folder}, which the controller writes: "
                            "run.output_dir must be a folder every node sees (a shared volume mounted at the same "
                            "path on each)")

    def load_checkpoint(self, folder: str, tag: str) -> None:
        self._get([r.load_checkpoint.remote(folder, tag) for r in self.ranks], "checkpoint")

    def save_pretrained(self, folder: str) -> None:
        self._get([r.save_pretrained.remote(folder) for r in self.ranks], "checkpoint")


class RolloutGroup:
    """The rollout actors, called with bounds; a dead one (restarted by Ray) is handed to `resync`
    ([actor] -> it holds the current weights) and its part of the work is redone, so nothing is lost
    or counted twice: a part's answers depend only on its requests, the weights and the seed."""

    def __init__(self, actors: list, timeout_s: float, restarts: int):
        self.actors, self.timeout_s, self.restarts = actors, timeout_s, restarts
        self.resync: Callable[[list], None] | None = None
        self.restarted = 0
        self.version = 0  # of the weights the actors hold (0: the model folder's)

    def __len__(self) -> int:
        return len(self.actors)

    def end(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

    def submit(self, index: int, requests: list, sampling) -> tuple:
        """Start actor `index` on `requests`; `result` of the returned handle gives the answers."""
        return index, requests, sampling, self.actors[index].generate.remote(requests, sampling)

    def result(self, handle: tuple) -> list:
        index, requests, sampling, ref = handle
        return self._ask(index, lambda: self.actors[index].generate.remote(requests, sampling), self.timeout_s,
                         "rollout.generate_timeout_s", ref)

    def generate(self, requests: list, sampling) -> list:
        """Requests spread over the actors; answers [B][n] in request order."""
        share = -(-len(requests) // len(self.actors))
        handles = [self.submit(i, requests[i * share : (i + 1) * share], sampling) for i in range(len(self.actors))]
        return [row for handle in handles for row in self.result(handle)]

    def on_each(self, method: str, *args, timeout_s: float, option: str) -> list:
        """actor.method(*args) on every actor, bounded; a dead actor is restarted, resynced, asked again."""
        starts = [lambda actor=actor: getattr(actor, method).remote(*args) for actor in self.actors]
        refs = [start() for start in starts]  # all actors work at once
        return [self._ask(i, start, timeout_s, option, ref) for i, (start, ref) in enumerate(zip(starts, refs))]

    def _ask(self, index: int, start: Callable[[], object], timeout_s: float, option: str, ref=None):
        """The result of `ref` (else of start()), bounded by timeout_s; after the actor's death it waits for
        Ray's restart, resyncs it, and asks again with start()."""
        role = f"rollout actor {index}"
        pending = [ref]

        def call():
            if pending[0] is None:
                pending[0] = start()
            try:
                return bounded_get(pending[0], timeout_s, role, option)
            except ray.exceptions.RayActorError:
                pending[0] = None
                raise

        def restarted():
            self.restarted += 1
            wait_alive(self.actors[index], self.timeout_s, role, "rollout.generate_timeout_s")
            if self.resync is not None:
                self.resync([self.actors[index]])

        return retrying(call, self.restarts, role, "rollout.max_restarts", restarted)


def start_rollouts(model, rollout, seed: int, slots: list[Slot], group=None) -> RolloutGroup:
    """One RolloutWorker actor per slot. model, rollout: the config's sections (typed); seed: run.seed.

    A restarted actor holds the model folder's weights: Ray never retries its calls by itself
    (max_task_retries 0), RolloutGroup does, after a resync."""
    # nccl/ipc weight transfer joins each engine to a process group at start: a restarted one is not in it
    transfer = rollout.backend == "vllm" and rollout.vllm.weight_sync != "object_store"
    restarts = 0 if transfer else rollout.max_restarts
    actor = ray.remote(max_restarts=restarts, max_task_retries=0)(RolloutWorker)
    actors = [actor.options(**actor_options(slot, group)).remote(model, rollout, seed) for slot in slots]
    return RolloutGroup(actors, rollout.generate_timeout_s, restarts)


class RewardGroup:
    """The reward actor (one: the preference branch compares items across the whole batch it is given).
    It is stateless, so a dead one is restarted by Ray and asked again. reward: the config's `reward` section
    (typed)."""

    def __init__(self, reward):
        self.timeout_s, self.restarts = reward.timeout_s, reward.max_restarts
        actor = ray.remote(num_cpus=0, max_restarts=self.restarts, max_task_retries=0)(RewardWorker)
        self.actor = actor.remote(reward)

    def score(self, answers: list, mos: list[float], tasks: list[str], reward=None, datasets: list[str] | None = None):
        """answers [B][K] (Completion), mos [B], tasks [B], datasets [B] -> the answers' rewards (rewards.prpo.
        BatchRewards); `reward`: the `reward` section to score with (typed; None: the one the actor was made with)."""
        texts = [[c.text for c in row] for row in answers]
        call = self.actor.score.remote
        return retrying(
            lambda: bounded_get(call(texts, mos, tasks, reward, datasets), self.timeout_s, "reward actor",
                                "reward.timeout_s"),
            self.restarts, "reward actor", "reward.max_restarts",
            lambda: wait_alive(self.actor, self.timeout_s, "reward actor", "reward.timeout_s"))
