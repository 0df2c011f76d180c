"""Resumable batches: a seeded shuffle per epoch and a position that checkpoints carry."""

from __future__ import annotations

import numpy as np


class BatchSampler:
    """Hands out indices into `size` items, as many as asked for at a time, reshuffling each epoch.

    The order of epoch e is a permutation seeded by (seed, e), so a state of (epoch, position)
    is all a checkpoint needs. A batch that runs past an epoch's end continues in the next one.
    """

    def __init__(self, size: int, seed: int):
        if size < 1:
            raise ValueError("cannot sample batches from zero items")
        self.size, self.seed = size, seed
        self.epoch, self.position = 0, 0

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def take(self, count: int) -> list[int]:
        """The next `count` indices (a caller that skips an unreadable item asks for one more, so no
        readable item is passed over)."""
        batch: list[int] = []
        while len(batch) < count:
            order = self._order(self.epoch)
            take = order[self.position : self.position + count - len(batch)]
            batch += take.tolist()
            self.position += len(take)
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class MixedSampler:
    """data.mix: each draw first picks a dataset by its weight, then that dataset's next item (a BatchSampler of
    its own, reshuffled each of its epochs). The pick of draw n is seeded by (seed, n), so a state of the draw count
    and each dataset's position is all a checkpoint needs.

    datasets: each training item's dataset, in the training items' order; weights: {dataset: weight >= 0}."""

    def __init__(self, datasets: list[str], weights: dict[str, float], seed: int):
        self.names = [name for name in sorted(weights) if weights[name] > 0]
        total = sum(weights[name] for name in self.names)
        self.p = np.array([weights[name] / total for name in self.names])
        self.members = {name: [i for i, d in enumerate(datasets) if d == name] for name in self.names}
        self.samplers = {name: BatchSampler(len(self.members[name]), seed + 1 + k)
                         for k, name in enumerate(self.names)}
        self.seed, self.draws = seed, 0

    def take(self, count: int) -> list[int]:
        batch = []
        for _ in range(count):
            pick = np.random.default_rng([self.seed, self.draws]).choice(len(self.names), p=self.p)
            name = self.names[pick]
            batch.append(self.members[name][self.samplers[name].take(1)[0]])
            self.draws += 1
        return batch

    def state(self) -> dict:
        return {"draws": self.draws, "seed": self.seed,
                "datasets": {name: sampler.state() for name, sampler in self.samplers.items()}}

    def load_state(self, state: dict) -> None:
        self.draws = int(state["draws"])
        for name, sampler in self.samplers.items():
            sampler.load_state(state["datasets"][name])


def training_sampler(datasets: list[str], mix: dict[str, float], seed: int):
    """A BatchSampler over all training items (data.mix empty: each dataset in proportion to its size), else a
    MixedSampler; `mix` must weigh every dataset of the training items and no other (ValueError naming them)."""
    if not mix:
        return BatchSampler(len(datasets), seed)
    present = set(datasets)
    unknown, unweighted = sorted(set(mix) - present), sorted(present - set(mix))
    if unknown or unweighted or min(mix.values()) < 0 or not any(weight > 0 for weight in mix.values()):
        raise ValueError(f"data.mix must give every training dataset a weight >= 0 (0 leaves one out), one at least "
                         f"above 0, and name no other: "
                         f"training datasets {sorted(present)}; not weighed {unweighted}; not in the training "
                         f"manifest {unknown}; weights {dict(mix)}")
    return MixedSampler(datasets, dict(mix), seed)
