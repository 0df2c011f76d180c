"""Starting the roles as Ray actors from a run's config, and calling them with bounds.

Every call into an actor is bounded by an option (`bounded_get`): a stuck actor is an error naming the role
and the option, never a hang. Rollout and reward actors are restarted by Ray after a death
(`max_restarts`); the caller gives a restarted rollout actor the current weights and redoes its part
(`RolloutGroup`). A learner rank's death ends the run: its ZeRO shards and the collective are gone.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, replace
from typing import Callable

import ray

from actors.learner import LearnerRank, LearnerSettings
from actors.placement import Plan, Slot, actor_options, plan, reserve
from actors.reward import RewardWorker
from actors.rollout import RolloutWorker
from launch.trainer.config import typed
from rollouts.backend import SamplingSettings


def connect_ray(address: str | None, num_cpus: int) -> None:
    """Join the cluster at `address` or RAY_ADDRESS (as under `ray job submit`), else start a local Ray.

    A local Ray gets token authentication with a fresh token for this process (unless RAY_AUTH_MODE or
    RAY_AUTH_TOKEN is set already): the actors inherit it, and any other driver that finds the ports is
    refused. Joining a cluster uses its token from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token.
    """
    os.environ.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    if os.environ.setdefault("RAY_AUTH_MODE", "token") == "token" and "RAY_AUTH_TOKEN" not in os.environ:
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray read RAY_AUTH_MODE when it was imported; this re-reads it (as ray.init does for its own default).
    from ray._raylet import Config

    Config.initialize("")
    context = ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    print(f"local Ray at {context.address_info['gcs_address']}, token authentication "
          f"{'on' if os.environ['RAY_AUTH_MODE'] == 'token' else 'OFF (RAY_AUTH_MODE)'}", flush=True)


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


class LearnerGroup:
    """N LearnerRank actors forming one DeepSpeed data-parallel group.

    Calls are bounded by learner.step_timeout_s (a step, a gather) or learner.checkpoint_timeout_s (start-up,
    checkpoints); a rank's death is a RoleError: the group cannot go on without its shards."""

    def __init__(self, cfg, slots: list[Slot] | None = None, group=None):
        settings = LearnerSettings.from_config(cfg)
        world = cfg.learner.num_ranks
        self.step_timeout_s, self.checkpoint_timeout_s = cfg.learner.step_timeout_s, cfg.learner.checkpoint_timeout_s
        slots = slots or plan("none", 0, world, False, cfg.learner.cpus_per_rank, learner_gpus(cfg), 0).learners
        actor = ray.remote(LearnerRank)
        self.ranks = [actor.options(**actor_options(slots[rank], group)).remote(settings, rank, world)
                      for rank in range(world)]
        addr, port = self._get(self.ranks[0].address.remote(), "checkpoint")
        self.ranks_info = self._get([r.setup.remote(addr, port) for r in self.ranks], "checkpoint")

    def _get(self, refs, bound: str):
        timeout_s = self.step_timeout_s if bound == "step" else self.checkpoint_timeout_s
        try:
            return bounded_get(refs, timeout_s, "learner group", f"learner.{bound}_timeout_s")
        except ray.exceptions.RayActorError as error:
            raise RoleError(f"a learner rank died ({type(error).__name__}: {str(error).splitlines()[0][:200]}); the "
                            "ZeRO group cannot go on without its shards. Rerun the same command: it resumes from the "
                            "newest checkpoint") from None

    def train_step(self, shards: list[list], lr: float | None = None) -> list[dict]:
        return self._get([r.train_step.remote(shard, lr) for r, shard in zip(self.ranks, shards)], "step")

    def full_weights(self) -> ray.ObjectRef:
        """ObjectRef of rank 0's gathered weights (every rank takes part in the gather)."""
        refs = [r.full_weights.remote() for r in self.ranks]
        self._get(refs, "step")
        return refs[0]

    def weights_digest(self) -> str:
        return self._get([r.weights_digest.remote() for r in self.ranks], "step")[0]

    def connect_rollouts(self, backend: str, rollouts: list, inference_workers: int) -> None:
        """vLLM weight transfer from rank 0 to the rollout engines (nccl | ipc)."""
        address, port = self._get(self.ranks[0].address.remote(), "checkpoint")
        self._get([r.connect_rollouts.remote(backend, rollouts, address, port, inference_workers)
                   for r in self.ranks], "checkpoint")

    def send_weights(self, timeout_s: float) -> None:
        try:
            bounded_get([r.send_weights.remote() for r in self.ranks], timeout_s, "weight sync",
                        "rollout.sync_timeout_s")
        except ray.exceptions.RayActorError as error:
            raise RoleError(f"a learner rank or rollout engine died during the weight transfer ({error}); rerun the "
                            "same command to resume") from None

    def save_checkpoint(self, folder: str, tag: str) -> None:
        self._get([r.save_checkpoint.remote(folder, tag) for r in self.ranks], "checkpoint")

    def load_checkpoint(self, folder: str, tag: str) -> None:
        self._get([r.load_checkpoint.remote(folder, tag) for r in self.ranks], "checkpoint")

    def save_pretrained(self, folder: str) -> None:
        self._get([r.save_pretrained.remote(folder) for r in self.ranks], "checkpoint")


class RolloutGroup:
    """The rollout actors, called with bounds; a dead one (restarted by Ray) is handed to `resync`
    ([actor] -> it holds the current weights) and its part of the work is redone, so nothing is lost
    or counted twice: a part's answers depend only on its requests, the weights and the seed."""

    def __init__(self, actors: list, timeout_s: float, restarts: int, resync=None):
        self.actors, self.timeout_s, self.restarts = actors, timeout_s, restarts
        self.resync: Callable[[list], None] | None = resync
        self.restarted = 0
        self.version = 0  # of the weights the actors hold (0: the model folder's)

    def __len__(self) -> int:
        return len(self.actors)

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


def learner_gpus(cfg) -> float:
    return cfg.learner.gpus_per_rank if cfg.learner.device != "cpu" else 0.0


def role_plan(cfg) -> Plan:
    return plan(cfg.placement.mode, cfg.rollout.num_actors, cfg.learner.num_ranks, cfg.rollout.device != "cpu",
                cfg.learner.cpus_per_rank, learner_gpus(cfg), cfg.placement.colocated_rollout_share)


def start_rollouts(cfg, slots: list[Slot] | None = None, group=None) -> RolloutGroup:
    """cfg.rollout.num_actors RolloutWorker actors, one GPU each unless on CPU (or as `slots` place them).

    A restarted actor holds the model folder's weights: Ray never retries its calls by itself
    (max_task_retries 0), RolloutGroup does, after a resync."""
    r = cfg.rollout
    # nccl/ipc weight transfer joins each engine to a process group at start: a restarted one is not in it
    restarts = 0 if r.backend == "vllm" and r.vllm.weight_sync != "object_store" else r.max_restarts
    slots = slots or plan("none", r.num_actors, 0, r.device != "cpu", 0, 0, 0).rollouts
    actor = ray.remote(max_restarts=restarts, max_task_retries=0)(RolloutWorker)
    model, rollout = typed(cfg.model), typed(cfg.rollout)
    actors = [actor.options(**actor_options(slots[i], group)).remote(model, rollout, cfg.run.seed)
              for i in range(r.num_actors)]
    return RolloutGroup(actors, r.generate_timeout_s, restarts)


class RewardGroup:
    """The reward actor (one: the preference branch compares items across the whole batch it is given).
    It is stateless, so a dead one is restarted by Ray and asked again."""

    def __init__(self, cfg):
        self.timeout_s, self.restarts = cfg.reward.timeout_s, cfg.reward.max_restarts
        actor = ray.remote(num_cpus=0, max_restarts=self.restarts, max_task_retries=0)(RewardWorker)
        self.actor = actor.remote(cfg.data.task, typed(cfg.reward))

    def score(self, answers: list, mos: list[float], tasks: list[str]) -> dict:
        """answers [B][K] (Completion), mos [B], tasks [B] -> every reward term and the total, each [B, K]."""
        texts = [[c.text for c in row] for row in answers]
        return retrying(
            lambda: bounded_get(self.actor.score.remote(texts, mos, tasks), self.timeout_s, "reward actor",
                                "reward.timeout_s"),
            self.restarts, "reward actor", "reward.max_restarts",
            lambda: wait_alive(self.actor, self.timeout_s, "reward actor", "reward.timeout_s"))


@dataclass
class Roles:
    rollouts: RolloutGroup
    reward: RewardGroup
    learners: LearnerGroup
    sync_timeout_s: float
    placement: dict | None = None  # the reserved bundles, for the run summary
    weight_transfer: str | None = None  # vLLM's nccl | ipc transfer, set up; None: the Ray object store

    def sync_weights(self, version: int, actors: list | None = None) -> None:
        """Learner's weights -> the rollout actors (`actors`: only these, e.g. a restarted one); returns once
        they generate with them. Through vLLM's weight transfer when set up (nccl | ipc), else rank 0's
        gathered weights as one Ray object. Slower than sync_timeout_s: a RoleError naming
        rollout.sync_timeout_s."""
        option = "rollout.sync_timeout_s"
        if self.weight_transfer:
            if actors is not None:
                raise RoleError(f"a rollout actor was restarted, but it cannot rejoin vLLM's {self.weight_transfer} "
                                "weight transfer (rollout.vllm.weight_sync); rerun the same command to resume")
            self.learners.send_weights(self.sync_timeout_s)
            self.rollouts.on_each("update_weight_version", str(version), timeout_s=self.sync_timeout_s, option=option)
        else:
            weights = self.learners.full_weights()
            if actors is None:
                self.rollouts.on_each("load_weights", weights, version, timeout_s=self.sync_timeout_s, option=option)
            else:
                bounded_get([actor.load_weights.remote(weights, version) for actor in actors], self.sync_timeout_s,
                            "restarted rollout actor", option)
        self.rollouts.version = version

    def verify_sync(self, cfg, requests: list) -> dict:
        """The rollout actors hold the learner's weights, or a RuntimeError.

        transformers backend: the hashes of the learner's weights and of every rollout actor's are equal.
        vLLM keeps fused weights, so there its greedy answers to `requests` (the readable validation items)
        must equal those of a transformers copy given the learner's weights."""
        timeout_s = cfg.rollout.generate_timeout_s
        if cfg.rollout.backend == "hf":
            learner = self.learners.weights_digest()
            rollouts = self.rollouts.on_each("weights_digest", timeout_s=timeout_s, option="rollout.generate_timeout_s")
            if any(d != learner for d in rollouts):
                short = [d[:12] for d in rollouts]
                raise RuntimeError(f"weight sync failed: learner {learner[:12]} but rollout actors {short}")
            return {"learner": learner, "rollouts": rollouts}
        transformers_cpu = replace(typed(cfg.rollout), backend="hf", device="cpu")
        copy = ray.remote(num_cpus=0)(RolloutWorker).remote(typed(cfg.model), transformers_cpu, cfg.run.seed)
        bounded_get(copy.load_weights.remote(self.learners.full_weights(), 0), self.sync_timeout_s,
                    "transformers copy", "rollout.sync_timeout_s")
        greedy = SamplingSettings.evaluation(replace(typed(cfg.eval), greedy=True), cfg.rollout, cfg.run.seed)
        expected = [row[0].token_ids for row in bounded_get(copy.generate.remote(requests, greedy), timeout_s,
                                                            "transformers copy", "rollout.generate_timeout_s")]
        ray.kill(copy)
        result = {"items": len(requests), "answer_tokens": sum(map(len, expected)), "rollouts": []}
        for index in range(len(self.rollouts)):
            answers = [row[0] for row in self.rollouts.result(self.rollouts.submit(index, requests, greedy))]
            skipped = [r.item_id for r, a in zip(requests, answers) if a.skipped]  # too long for the engine
            differ = [r.item_id for r, a, b in zip(requests, answers, expected) if not a.skipped and a.token_ids != b]
            result["rollouts"].append({"equal": len(requests) - len(differ) - len(skipped), "differ": differ,
                                       "skipped": skipped})
            if differ:
                raise RuntimeError(f"weight sync failed: rollout actor {index}'s greedy answers differ from the "
                                   f"learner's weights' on {len(differ)} of {len(requests)} items ({differ[:3]})")
        return result


def start_roles(cfg) -> Roles:
    """Reserve the placement group (if any), then start rollout actors, the reward actor, the learners."""
    layout = role_plan(cfg)
    group = reserve(layout, cfg.placement.strategy, cfg.placement.timeout_s)
    placement = None
    if group is not None:
        placement = {"mode": cfg.placement.mode, "strategy": cfg.placement.strategy, "bundles": layout.bundles,
                     "rollout_bundles": [s.bundle for s in layout.rollouts],
                     "learner_bundles": [s.bundle for s in layout.learners],
                     "state": ray.util.placement_group_table(group)["state"]}
    roles = Roles(start_rollouts(cfg, layout.rollouts, group), RewardGroup(cfg),
                  LearnerGroup(cfg, layout.learners, group), cfg.rollout.sync_timeout_s, placement)
    # A rollout actor that Ray restarted holds the model folder's weights: it gets the learner's first.
    roles.rollouts.resync = lambda actors: roles.sync_weights(roles.rollouts.version, actors)
    sync = cfg.rollout.vllm.weight_sync if cfg.rollout.backend == "vllm" else "object_store"
    if sync in ("nccl", "ipc"):
        workers = len(roles.rollouts) * cfg.rollout.vllm.tensor_parallel_size
        roles.learners.connect_rollouts(sync, roles.rollouts.actors, workers)
        roles.weight_transfer = sync
    return roles
