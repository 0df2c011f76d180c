"""The learner's weights to the rollout actors, and the end-of-run proof that they arrived."""

from __future__ import annotations

from dataclasses import dataclass

import ray

from actors.calls import RoleError, bounded_get
from actors.groups import LearnerGroup, RolloutGroup


class WeightSyncError(RuntimeError):
    """A sync that did not deliver: the rollout side holds other weights than the learner sent, or a step changed
    the learner and the weights it sent did not change (verl#7495: the frozen base pushed without its adapters)."""


@dataclass(frozen=True)
class Delivery:
    """One sync as checked (models/weights.sample_checksums): the learner's record (LearnerRank.delivery_record:
    "sent", "merged" before the cast, "trainable") and each checked rollout actor's checksums of what it holds
    (None: an engine whose side is not visible, vLLM's nccl/ipc transfer)."""

    record: dict
    held: tuple[dict[str, float] | None, ...]


def check_delivery(version: int, record: dict, held: list[dict | None], previous: Delivery | None) -> Delivery:
    """What each rollout actor holds against what the learner sent, and the learner's record against the previous
    sync's; a WeightSyncError names what did not arrive. The change is judged before the cast to model.dtype: in
    bf16 a small update may round to the same weights, which is precision, not a lost sync."""
    sent = record["sent"]
    for index, holds in enumerate(held):
        if holds is None:
            continue
        differ = sorted(name for name in sent.keys() | holds.keys() if holds.get(name) != sent.get(name))
        if differ:
            raise WeightSyncError(f"weight sync to version {version}: rollout actor {index} holds {len(differ)} of "
                                  f"{len(sent)} tensors other than the learner sent ({', '.join(differ[:3])})")
    before = previous.record if previous is not None else None
    if before is not None and record["trainable"] != before["trainable"] and record["merged"] == before["merged"]:
        raise WeightSyncError(f"weight sync to version {version}: the learner's trained parameters changed since the "
                              "last sync but the weights it sent did not (the adapters left out of the merge?)")
    return Delivery(record, tuple(held))


class WeightSync:
    """Learner -> rollout actors, through vLLM's weight transfer when it is set up (`transport` nccl | ipc),
    else rank 0's gathered weights as one Ray object. Every call is bounded by rollout.sync_timeout_s. Every
    push is checked (check_delivery): what arrived equals what the learner sent, and a changed learner changed
    what the rollouts hold."""

    def __init__(self, learners: LearnerGroup, rollouts: RolloutGroup, timeout_s: float, transport: str | None):
        self.learners, self.rollouts, self.timeout_s, self.transport = learners, rollouts, timeout_s, transport
        self.delivered: Delivery | None = None

    def push(self, version: int, actors: list | None = None) -> dict[str, float]:
        """The learner's current weights to every rollout actor (`actors`: only these, e.g. a restarted one);
        returns once they generate with them, with the delivery's figures (sync/* metrics)."""
        option = "rollout.sync_timeout_s"
        if self.transport:
            if actors is not None:
                raise RoleError(f"a rollout actor was restarted, but it cannot rejoin vLLM's {self.transport} "
                                "weight transfer (rollout.vllm.weight_sync); rerun the same command to resume")
            self.learners.send_weights(self.timeout_s)
            self.rollouts.on_each("update_weight_version", str(version), timeout_s=self.timeout_s, option=option)
            held = [None] * len(self.rollouts)
        else:
            weights = self.learners.full_weights()
            if actors is None:
                held = self.rollouts.on_each("load_weights", weights, version, timeout_s=self.timeout_s,
                                             option=option)
            else:
                held = bounded_get([actor.load_weights.remote(weights, version) for actor in actors], self.timeout_s,
                                   "restarted rollout actor", option)
        record = self.learners.delivery_record()
        # A restarted actor held the model folder's weights: only what it holds now is compared.
        delivery = check_delivery(version, record, held, self.delivered if actors is None else None)
        if actors is None:
            self.delivered = delivery
        self.rollouts.version = version
        checked = [h for h in held if h is not None]
        return {"sync/tensors_verified": float(sum(len(h) for h in checked)),
                "sync/actors_verified": float(len(checked)), "sync/tensors_sent": float(len(record["sent"]))}

    def unchanged(self, version: int) -> None:
        """A step that applied no update (every rank skipped it): the rollouts hold the weights of `version`."""
        self.rollouts.version = version

    def verify_digests(self) -> dict:
        """transformers rollouts: the hash of every rollout actor's weights equals the learner's, else RuntimeError."""
        learner = self.learners.weights_digest()
        rollouts = self.rollouts.on_each("weights_digest", timeout_s=self.rollouts.timeout_s,
                                         option="rollout.generate_timeout_s")
        if any(d != learner for d in rollouts):
            short = [d[:12] for d in rollouts]
            raise RuntimeError(f"weight sync failed: learner {learner[:12]} but rollout actors {short}")
        return {"learner": learner, "rollouts": rollouts}

    def verify_answers(self, requests: list, copy, greedy) -> dict:
        """vLLM keeps fused weights, so its greedy answers to `requests` must equal those of `copy` (a transformers
        RolloutWorker actor on CPU) given the learner's weights; else RuntimeError. The copy is ended here."""
        timeout_s = self.rollouts.timeout_s
        bounded_get(copy.load_weights.remote(self.learners.full_weights(), 0), self.timeout_s, "transformers copy",
                    "rollout.sync_timeout_s")
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
