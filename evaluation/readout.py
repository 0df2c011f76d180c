"""How an item's score is read from the model (`eval.readout`): greedy, mean, or expected.

- greedy: one greedy answer; its scores as written.
- mean: `eval.samples` answers at the rollout temperature; the mean over the parseable ones, with their spread.
- expected: one greedy answer, each score replaced by its expectation under the model. The rule: in the last
  `<answer>` block, a score written `d.ff` has its leading digit d as a token of its own (text: that one digit).
  With p(k) the model's probabilities (temperature 1) of the tokens "1".."5" at that position, renormalised over
  those five, the score is sum_k p(k) * clip(k + f, 1, 5), f = the written score - d (the decimals, taken greedily).
  A score whose leading digit shares its token with other characters (a tokenizer that merges "3." or "34" into one
  token) keeps its greedy value and is counted as a fallback. Qwen2.5's tokenizer gives every digit its own token;
  the tiny test model's BPE merges digit pairs ("45"), but a score on [1, 5] written "d.ff" still starts with a
  single-digit token. Deterministic: the transformers backend runs each prompt alone for it, so the scores do not
  depend on batch size, prompt chunking, item order or actor count (vLLM batches on its own: VLLM_BATCH_INVARIANT=1).
"""

from __future__ import annotations

import numpy as np

from rewards.answer_format import SCALE, SCORE_DIGITS, score_spans

READOUTS = ("greedy", "mean", "expected")


def describe(evaluation, temperature: float) -> str:
    """The readout of an `eval` config section in words, for tables and plot titles."""
    if evaluation.readout == "mean":
        return f"mean of {evaluation.samples} samples at T={temperature}"
    return "greedy" if evaluation.readout == "greedy" else "expected over the leading digit"


def expected_scores(text: str, token_starts: list[int] | None, digit_logprobs: list[list[float]] | None,
                    task: str) -> tuple[np.ndarray | None, int]:
    """A greedy answer's scores [D] by the rule above (None: it does not parse, as `read_scores`), and how many of
    them kept their greedy value (leading digit not a token of its own, or no per-token data).

    token_starts [T]: where each answer token begins in `text`; digit_logprobs [T][5]: log-probs of "1".."5" there.
    """
    found = score_spans(text, task)
    if found is None:
        return None, 0
    if not token_starts or not digit_logprobs:
        return np.asarray([value for _, value in found]), len(found)
    ends = [*token_starts[1:], len(text)]
    token_at = {start: t for t, (start, end) in enumerate(zip(token_starts, ends)) if end > start}
    scores, fallbacks = [], 0
    for start, value in found:
        lead = start + (text[start] in "+-")
        t = token_at.get(lead)
        if t is None or ends[t] != lead + 1 or text[lead] not in SCORE_DIGITS:
            scores.append(value)
            fallbacks += 1
            continue
        logprobs = np.asarray(digit_logprobs[t], dtype=np.float64)
        p = np.exp(logprobs - logprobs.max())
        p /= p.sum()
        decimals = value - int(text[lead])
        digits = np.arange(1, len(SCORE_DIGITS) + 1)
        scores.append(float(p @ np.clip(digits + decimals, *SCALE)))
    return np.asarray(scores), fallbacks
