"""Rollout backend on transformers models: CPU for local runs and tests, GPU without vLLM.

Each prompt (its pictures through the vision tower included) is run once; its G answers are sampled
on top of its key/value cache, a decode step for all rows at a time, keeping only the sampled token's
log-prob of each step (never the step's whole logits)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

import torch
from transformers.cache_utils import DynamicLayer

from models.loading import load_policy
from models.processor import QualityProcessor, digit_token_ids, token_starts
from models.sequences import prefill, with_cache
from rollouts.backend import Completion, RolloutRequest, SamplingSettings


class HFRolloutBackend:
    """model, rollout: the config's sections (ModelConfig, RolloutConfig)."""

    def __init__(self, model, rollout):
        self.processor = QualityProcessor(model.path, model.min_pixels, model.max_pixels)
        self.model = load_policy(model.path, dtype=model.dtype, device=rollout.device)
        self.model.eval()
        self.device = rollout.device
        self.prompt_chunk = rollout.prompt_chunk

    @torch.no_grad()
    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings) -> list[list[Completion]]:
        answers: list[list[Completion]] = []
        # The expected readout runs each prompt alone: batched, float rounding would depend on the batch's make-up.
        chunk = 1 if sampling.digit_logprobs else self.prompt_chunk
        for start in range(0, len(requests), chunk):
            answers += self._generate_chunk(requests[start : start + chunk], sampling)
        return answers

    def _generate_chunk(self, requests: list[RolloutRequest], sampling: SamplingSettings) -> list[list[Completion]]:
        n = 1 if sampling.greedy else sampling.n
        prompts = {k: v.to(self.device) for k, v in
                   self.processor.encode([r.messages for r in requests], [r.images for r in requests]).items()}
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        watch = self.digit_ids if sampling.digit_logprobs else None
        out = sample_group(self.model, prompts, n, sampling, self.processor, watch)
        completions = []
        for row, (length, ended) in enumerate(zip(out.lengths.tolist(), out.finished.tolist())):
            ids = out.tokens[row, :length].tolist()
            completion = Completion(token_ids=ids, text=self.processor.decode(ids),
                                    logprobs=out.logprobs[row, :length].tolist(), finished=ended)
            if watch is not None:
                completion.digit_logprobs = out.watched[row, :length].tolist()
                completion.token_starts = token_starts(self.processor.tokenizer, ids, completion.text)
            completions.append(completion)
        return [completions[i * n : (i + 1) * n] for i in range(len(requests))]

    @functools.cached_property
    def digit_ids(self) -> list[int]:
        """The tokens "1".."5" (the expected readout); looked up once, on first use."""
        return digit_token_ids(self.processor.tokenizer)

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: int) -> None:
        self.model.load_state_dict(dict(weights), strict=True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()


def next_tokens(logits: torch.Tensor, sampling: SamplingSettings,
                suppress: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, V] -> the next token [N] (greedy, or sampled at the temperature within top-k / top-p) and its
    log-prob [N] at the sampling temperature over the whole vocabulary: what the learner recomputes."""
    temperature = 1.0 if sampling.greedy else sampling.temperature
    scaled = logits.float() / temperature
    allowed = scaled.clone()
    allowed[:, suppress] = -float("inf")  # a picture token sampled into an answer breaks the training forward
    if sampling.greedy:
        chosen = allowed.argmax(dim=-1)
    else:
        if sampling.top_k > 0:
            kth = allowed.topk(min(sampling.top_k, allowed.shape[-1]), dim=-1).values[:, -1:]
            allowed = allowed.masked_fill(allowed < kth, -float("inf"))
        if sampling.top_p < 1.0:
            ordered, order = allowed.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            drop = probs.cumsum(dim=-1) - probs > sampling.top_p  # keep the smallest set reaching top_p
            allowed = allowed.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
        chosen = torch.multinomial(allowed.softmax(dim=-1), 1).squeeze(-1)
    logprob = scaled.log_softmax(dim=-1).gather(-1, chosen[:, None]).squeeze(-1)
    return chosen, logprob


class _PreallocatedLayer(DynamicLayer):
    """A key/value cache layer that writes each decode step into room made once, where DynamicLayer copies the
    whole cache into a fresh tensor every step (and pays a page fault per page of it on CPU)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.used + key_states.shape[-2]
        self.key_room[:, :, self.used : end] = key_states
        self.value_room[:, :, self.used : end] = value_states
        self.used = end
        self.keys, self.values = self.key_room[:, :, :end], self.value_room[:, :, :end]
        return self.keys, self.values


def preallocate(layer, extra: int) -> None:
    """Turn a filled DynamicLayer into a _PreallocatedLayer with room for `extra` more tokens."""
    batch, heads, length, dim = layer.keys.shape
    layer.key_room = layer.keys.new_empty(batch, heads, length + extra, dim)
    layer.value_room = layer.values.new_empty(batch, heads, length + extra, layer.values.shape[-1])
    layer.key_room[:, :, :length], layer.value_room[:, :, :length] = layer.keys, layer.values
    layer.used = length
    layer.keys, layer.values = layer.key_room[:, :, :length], layer.value_room[:, :, :length]
    layer.__class__ = _PreallocatedLayer


class Sampled(NamedTuple):
    """Answers [B*n] of `sample_group`: tokens [B*n, T] (pad after the end), their sampling log-probs [B*n, T], each
    answer's length [B*n] (its end token included), whether it ended [B*n] (else it hit max_new_tokens), and the
    watched tokens' log-probs at temperature 1 [B*n, T, W] (None when no token was watched)."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    watched: torch.Tensor | None


@torch.no_grad()
def sample_group(model, prompts: dict, n: int, sampling: SamplingSettings, processor,
                 watch: list[int] | None = None) -> Sampled:
    """n answers to each of the prompts [B, P]: each prompt (its pictures included) is run once and its key/value
    cache shared by its n answers. `watch`: token ids whose log-probs are kept at every position."""
    device = prompts["input_ids"].device
    rows = torch.arange(prompts["input_ids"].shape[0], device=device).repeat_interleave(n)
    logits, cache, position = prefill(model, prompts, rows)
    for layer in cache.layers:
        preallocate(layer, sampling.max_new_tokens)
    mask = prompts["attention_mask"][rows]
    cache_argument = with_cache(model, cache)
    column = prompts["input_ids"].shape[1]
    eos = torch.tensor(processor.eos_ids, device=device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    lengths = torch.zeros(len(rows), dtype=torch.long, device=device)
    tokens, logprobs, watched = [], [], []
    for step in range(sampling.max_new_tokens):
        if watch is not None:
            watched.append(logits.float().log_softmax(dim=-1)[:, watch])
        chosen, logprob = next_tokens(logits, sampling, processor.vision_ids)
        chosen = chosen.masked_fill(done, processor.pad_id)
        tokens.append(chosen)
        logprobs.append(logprob.masked_fill(done, 0.0))
        lengths += ~done
        done = done | torch.isin(chosen, eos)
        if bool(done.all()) or step == sampling.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=(position + step)[..., None],
                    **cache_argument, use_cache=True, cache_position=torch.tensor([column + step], device=device))
        logits = out.logits[:, -1]
    return Sampled(torch.stack(tokens, dim=1).cpu(), torch.stack(logprobs, dim=1).cpu(), lengths.cpu(), done.cpu(),
                   torch.stack(watched, dim=1).cpu() if watch is not None else None)

