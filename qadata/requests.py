"""Manifest items as rollout requests: one media file becomes a request with its pictures, question and
task; a run's training and evaluation items are drawn and loaded here, unreadable media skipped and named."""

from __future__ import annotations

import time

import numpy as np

from qadata.errors import TransientMediaError
from qadata.manifest import ManifestError, items, read_manifest
from qadata.media import MediaError, load_pictures
from qadata.sampler import BatchSampler, MixedSampler, training_sampler
from qadata.video import VideoSettings
from rewards.answer_format import ANSWER_DIMS, TASK_OF_KIND, chat_messages, wording_for
from rollouts.backend import RolloutRequest

DATA_TASKS = ("auto", *ANSWER_DIMS)  # auto: each item's task from its kind (TASK_OF_KIND)
TRANSIENT_TRIES, TRANSIENT_WAIT_S = 3, 0.5  # a failed read of a shared volume: tried again after 0.5 s, then 1 s


def media_request(item_id: str, path: str, kind: str, task: str, video: VideoSettings,
                  wording_seed: int | None = None, dataset: str = "") -> RolloutRequest:
    """The rollout request for one media file (MediaError if it cannot be read); video: VideoSettings. The
    canonical question, or with `wording_seed` the wording rewards.answer_format.wording_for picks."""
    pictures = load_pictures(path, kind, video)
    wording = 0 if wording_seed is None else wording_for(item_id, wording_seed, task)
    return RolloutRequest(item_id, pictures, chat_messages(task, len(pictures), wording), task, dataset)


class RunData:
    """Manifest items with their pictures; unreadable media is skipped, counted and named once.

    The evaluation set stays a list of items: validation loads it a chunk at a time."""

    def __init__(self, cfg):
        """cfg: the run's validated config (data, video, run.seed, run.shuffle_labels)."""
        self.task = cfg.data.task
        train_frame = read_manifest(cfg.data.train_manifest)
        eval_path = cfg.data.eval_manifest or cfg.data.train_manifest
        eval_frame = read_manifest(eval_path)
        self.train = items(train_frame, cfg.data.train_split, cfg.data.train_manifest)
        self.eval = items(eval_frame, cfg.data.eval_split, eval_path)[: cfg.data.eval_limit]
        self.labels = np.array([item.mos for item in self.train])
        if cfg.run.shuffle_labels:  # the null control: same images, MOS permuted
            self.labels = np.random.default_rng(cfg.run.seed + 1).permutation(self.labels)
        self.skipped: dict[str, str] = {}
        self.video = VideoSettings(**cfg.video)
        self.mix = dict(cfg.data.mix)
        try:
            self.sampler(cfg.run.seed)
        except ValueError as error:
            raise ManifestError(f"{cfg.data.train_manifest}: {error}") from None

    def sampler(self, seed: int):
        """A fresh training sampler (qadata/sampler.training_sampler: by data.mix, when it is set)."""
        return training_sampler([item.dataset for item in self.train], self.mix, seed)

    def task_of(self, item) -> str:
        """iqa | vqa: the configured task, or with `auto` the item's kind (images iqa, videos vqa)."""
        return TASK_OF_KIND[item.kind] if self.task == "auto" else self.task

    def load(self, item, wording_seed: int | None = None) -> RolloutRequest:
        """The item's request; MediaError (recorded, and printed the first time) when its media is unreadable. A read
        that failed for a reason that may pass (TransientMediaError) is tried again, and if it still fails the item
        is passed over this time only: it is not recorded, so a later draw and a resumed run try it again."""
        if item.path in self.skipped:
            raise MediaError(self.skipped[item.path])
        for attempt in range(TRANSIENT_TRIES):
            try:
                return media_request(item.item_id, item.path, item.kind, self.task_of(item), self.video,
                                     wording_seed, item.dataset)
            except TransientMediaError as error:
                if attempt == TRANSIENT_TRIES - 1:
                    print(f"passing over media that could not be read just now ({TRANSIENT_TRIES} tries): {error}",
                          flush=True)
                    raise
                time.sleep(TRANSIENT_WAIT_S * 2**attempt)
            except MediaError as error:
                self.skipped[item.path] = str(error)
                print(f"skipping unreadable media ({len(self.skipped)} so far): {error}", flush=True)
                raise

    def batch(self, sampler: BatchSampler | MixedSampler, size: int,
              wording_seed: int | None = None) -> tuple[list[RolloutRequest], list[float]]:
        """`size` readable training items: their requests (each with its task; `wording_seed`: as media_request)
        and MOS. An unreadable item is passed over and the next one taken, so a skip never pushes a readable item
        out of the epoch."""
        requests, mos, drawn = [], [], 0
        while len(requests) < size:
            if drawn >= len(self.train) + size:
                raise RuntimeError(f"could not fill a batch of {size}: {len(self.skipped)} of {len(self.train)} "
                                   "training media files are unreadable (named above)")
            for index in sampler.take(size - len(requests)):
                drawn += 1
                try:
                    requests.append(self.load(self.train[index], wording_seed))
                except MediaError:
                    continue
                mos.append(float(self.labels[index]))
        return requests, mos

    def readable_eval(self) -> list[RolloutRequest]:
        """The evaluation items' requests, unreadable ones left out (they are counted by validation)."""
        requests = []
        for item in self.eval:
            try:
                requests.append(self.load(item))
            except MediaError:
                pass
        return requests
