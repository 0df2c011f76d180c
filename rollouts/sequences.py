"""Prompt + completion layout and per-token log-probs, shared by generation, learning and warm-up.

Layout of one row: [left-padded prompt | completion | right padding]. Because every prompt ends at
the same column, completion token j of every row sits at column P + j (P = prompt width).
"""

from __future__ import annotations

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
    logits = model(**inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1, :].float()
    logits = logits / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    taken = log_probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return taken, entropy, mask.to(taken.dtype)
