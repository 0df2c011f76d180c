"""Dynamic sampling: a step's groups whose G rewards are (nearly) equal carry no gradient; they are replaced by
the next items of the data, generated and sieved in further rounds, up to `algorithm.dynamic_sampling.
max_extra_items` items beyond the batch. The rewards of each round only sieve: the step's rewards are computed
once, over the final batch, so the preference branch compares one consistent set of items. When the bound is hit
the step trains on what there is: the missing places are padded as a skipped prompt is (no tokens, advantage 0)
and counted; the run never ends for it. (Should no group at all differ, the first round's batch is trained on as
it came: its advantages are 0, so only the KL term moves the weights.)"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from actors.grpo_objective import informative_groups
from launch.trainer.config import typed
from rollouts.backend import Completion


@dataclass(frozen=True)
class Refill:
    """What a step's sieve did: generation rounds after the first, items drawn beyond the batch, groups dropped
    as flat, places of the batch left without an informative group, and of those the ones padded."""

    rounds: int
    extra_items: int
    flat_groups: int
    shortfall: int
    padded: int

    def metrics(self) -> dict[str, float]:
        return {f"dynamic/{k}": float(v) for k, v in self.__dict__.items()}


def refilled(run, step: int, requests: list, mos: list[float], answers: list) -> tuple[list, list, list, Refill]:
    """The batch with its flat groups replaced by informative ones from the next items (`run`: the TrainingRun;
    requests [B], mos [B], answers [B][G]); returns the final requests, MOS, answers and what it took."""
    stage = run.stage(step).cfg
    cfg, size, reward = stage.algorithm.dynamic_sampling, len(requests), typed(stage.reward)
    kept, flat = [], []  # (request, mos, answers) in the order drawn
    sieve(run, requests, mos, answers, cfg.min_reward_std, reward, kept, flat)
    rounds = extra = 0
    while len(kept) < size and extra < cfg.max_extra_items:
        rounds += 1
        more = min(size - len(kept), cfg.max_extra_items - extra)
        new_requests, new_mos = run.draw(step, more)
        extra += len(new_requests)
        sieve(run, new_requests, new_mos, run.roles.rollouts.generate(new_requests, run.sampling(step, rounds)),
              cfg.min_reward_std, reward, kept, flat)
    shortfall = max(size - len(kept), 0)
    if not kept:
        return requests, mos, answers, Refill(rounds, extra, len(flat), shortfall, 0)
    final = kept[:size] + [(request, value, [padding() for _ in row]) for request, value, row in flat[:shortfall]]
    refill = Refill(rounds, extra, len(flat), shortfall, shortfall)
    return [f[0] for f in final], [f[1] for f in final], [f[2] for f in final], refill


def sieve(run, requests: list, mos: list[float], answers: list, min_std: float, reward, kept: list,
          flat: list) -> None:
    """Each answered item to `kept` when its group's rewards (scored among this round's items) differ, else to
    `flat`; an item the engine skipped goes to `flat` too (it has nothing to learn from)."""
    answered = [i for i, row in enumerate(answers) if not any(c.skipped for c in row)]
    informative = set()
    if answered:
        rewards = run.roles.reward.score([answers[i] for i in answered], [mos[i] for i in answered],
                                         [requests[i].task for i in answered], reward,
                                         [requests[i].dataset for i in answered])
        differ = informative_groups(torch.tensor(rewards.terms["total"]), min_std)
        informative = {i for i, keep in zip(answered, differ.tolist()) if keep}
    for i, row in enumerate(answers):
        (kept if i in informative else flat).append((requests[i], mos[i], row))


def padding() -> Completion:
    """An answer as the engine gives for a prompt it skipped: nothing to score or learn from."""
    return Completion(token_ids=[], text="", logprobs=[], finished=False, skipped=True)
