"""Prompt + completion layout and per-token log-probs, shared by generation, learning and warm-up.

Layout of one row: [left-padded prompt | completion | right padding]. Because every prompt ends at
the same column, completion token j of every row sits at column P + j (P = prompt width).

A GRPO group is G answers to one prompt. `grouped_logprobs` runs each distinct prompt (its pictures
through the vision tower included) once and the G answers on top of its key/value cache, instead of
G copies of the prompt: the same log-probs and, through the cache, the same gradients (summed over
the G uses), as `completion_logprobs` computes one row per answer.
"""

from __future__ import annotations

import functools
import inspect

import torch


def pad_completions(completions: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> ids [N, C] right-padded with pad_id, mask [N, C] (1 on real tokens)."""
    width = max(1, max(len(c) for c in completions))
    ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(completions), width), dtype=torch.long)
    for row, tokens in enumerate(completions):
        ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


def join_prompt_and_completions(
    prompts: dict[str, torch.Tensor], completions: list[list[int]], pad_id: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Model inputs for prompts [N, P] followed by their completions; and the completion mask [N, P+C]."""
    ids, mask = (t.to(prompts["input_ids"].device) for t in pad_completions(completions, pad_id))
    inputs = dict(prompts)
    inputs["input_ids"] = torch.cat([prompts["input_ids"], ids], dim=1)
    inputs["attention_mask"] = torch.cat([prompts["attention_mask"], mask], dim=1)
    if "mm_token_type_ids" in prompts:  # completion tokens are text
        types = prompts["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([types, torch.zeros_like(ids, dtype=types.dtype)], dim=1)
    completion_mask = torch.cat([torch.zeros_like(prompts["input_ids"]), mask], dim=1)
    return inputs, completion_mask


def completion_logprobs(
    model, prompts: dict[str, torch.Tensor], completions: list[list[int]], pad_id: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs of each completion token under `model` at the sampling temperature.

    Returns logprobs [N, C], entropy [N, C] (nats, of the tempered distribution) and mask [N, C].
    """
    inputs, completion_mask = join_prompt_and_completions(prompts, completions, pad_id)
    width = inputs["input_ids"].shape[1] - prompts["input_ids"].shape[1]
    ids, mask = inputs["input_ids"][:, -width:], completion_mask[:, -width:]
    logits = model(**inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1, :]
    taken, entropy = token_logprobs(logits, ids, temperature)
    return taken, entropy, mask.to(taken.dtype)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float,
                   chunk_tokens: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, C, V], ids [N, C] -> log-prob of each id [N, C] and the entropy [N, C] (nats, no gradient) at
    `temperature`, `chunk_tokens` tokens at a time: a gather and a logsumexp, never a whole [N, C, V] log-softmax."""
    flat, wanted = logits.reshape(-1, logits.shape[-1]), ids.reshape(-1)
    taken, entropy = [], []
    for start in range(0, flat.shape[0], chunk_tokens):
        part = flat[start : start + chunk_tokens].float() / temperature
        norm = torch.logsumexp(part, dim=-1)
        taken.append(part.gather(-1, wanted[start : start + chunk_tokens, None]).squeeze(-1) - norm)
        with torch.no_grad():
            entropy.append(norm - (torch.softmax(part, dim=-1) * part).sum(-1))
    return torch.cat(taken).view(ids.shape), torch.cat(entropy).view(ids.shape)


def prompt_positions(model, prompts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Qwen2.5-VL's rotary positions [3, U, P] of left-padded prompts, as its forward computes them: 3-D over
    the picture tokens (`get_rope_index`), and plain column numbers for a batch without pictures."""
    ids = prompts["input_ids"]
    if "image_grid_thw" in prompts:
        inner = hf_model(model).model
        positions, _ = inner.get_rope_index(ids, prompts["mm_token_type_ids"], image_grid_thw=prompts["image_grid_thw"],
                                            attention_mask=prompts["attention_mask"])
        return positions
    return torch.arange(ids.shape[1], device=ids.device).expand(3, *ids.shape)


def with_cache(model, cache) -> dict:
    """The forward keyword for a key/value cache: `cache` from transformers 5.2x on, `past_key_values` before
    (vLLM's environment holds transformers < 5.21)."""
    return {_cache_keyword(type(hf_model(model))): cache}


def hf_model(model):
    """The Hugging Face model inside a DeepSpeed engine (.module) and a peft wrapper (get_base_model)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@functools.cache
def _cache_keyword(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def prefill(model, prompts: dict[str, torch.Tensor], rows: torch.Tensor):
    """Each distinct prompt [U, P] through the model once -> (logits of its last token, repeated to `rows` [N]:
    [N, V]; the key/value cache with prompt rows[n] in row n; positions [3, N] of the first token after them).

    Text after the pictures has consecutive positions, so answer token k sits at the last prompt token's + 1 + k."""
    positions = prompt_positions(model, prompts)
    out = model(**prompts, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
    for layer in cache.layers:  # row n of the cache holds prompt rows[n] (indexing: gradients sum over the uses)
        layer.keys, layer.values = layer.keys[rows], layer.values[rows]
    return out.logits[rows, -1], cache, positions[:, rows, -1] + 1


def grouped_logprobs(model, prompts: dict[str, torch.Tensor], rows: list[int], completions: list[list[int]],
                     pad_id: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs of completions [N], completion n following prompt rows[n] of `prompts` [U, P], with each prompt
    run once (its pictures through the vision tower once) and its completions on its key/value cache.

    Returns logprobs [N, C], entropy [N, C] and mask [N, C], as completion_logprobs with prompts[rows]."""
    device = prompts["input_ids"].device
    index = torch.as_tensor(rows, device=device)
    first, cache, start = prefill(model, prompts, index)
    ids, mask = (t.to(device) for t in pad_completions(completions, pad_id))
    width, prompt_width = ids.shape[1], prompts["input_ids"].shape[1]
    steps = torch.arange(width, device=device)
    out = model(input_ids=ids, attention_mask=torch.cat([prompts["attention_mask"][index], mask], dim=1),
                position_ids=start[..., None] + steps, **with_cache(model, cache), use_cache=True,
                cache_position=prompt_width + steps)
    logits = torch.cat([first[:, None], out.logits[:, :-1]], dim=1)  # token j is predicted from position j - 1
    taken, entropy = token_logprobs(logits, ids, temperature)
    return taken, entropy, mask.to(taken.dtype)
