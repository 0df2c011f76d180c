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
