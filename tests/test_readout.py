"""The expected readout: its rule on hand-made answers, the model's own probabilities behind it, and the same scores
whatever the batch size, prompt chunking, item order and actor count."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.readout import expected_scores
from rewards.answer_format import format_answer

LOG = math.log


def tokens_of(pieces: list[str]) -> tuple[str, list[int]]:
    """A text made of `pieces` (one token each) and where each starts."""
    starts, at = [], 0
    for piece in pieces:
        starts.append(at)
        at += len(piece)
    return "".join(pieces), starts


def digits(**p) -> list[float]:
    """Log-probs of "1".."5" from a few named probabilities (d1=0.5, ...), the rest tiny."""
    return [LOG(p.get(f"d{k}", 1e-12)) for k in range(1, 6)]


def test_a_sure_model_reads_as_greedy_and_an_unsure_one_as_its_expectation():
    pieces = ["<think>", "ok", "</think>", "<answer>", "\n", "3", ".", "45", "\n", "2", ".", "10", "\n", "</answer>"]
    text, starts = tokens_of(pieces)
    flat = [LOG(0.2)] * 5
    rows = [flat] * len(pieces)
    rows[5] = digits(d3=1.0)                 # "3" of 3.45: sure
    rows[9] = digits(d2=0.5, d3=0.5)         # "2" of 2.10: torn between 2 and 3
    scores, fallbacks = expected_scores(text, starts, rows, "vqa")
    assert fallbacks == 0
    assert scores == pytest.approx([3.45, 0.5 * 2.10 + 0.5 * 3.10])


def test_the_expectation_stays_on_the_scale_and_renormalises_over_the_five_digits():
    text, starts = tokens_of(["<answer>", "4", ".", "90", "\n", "1", ".", "00", "</answer>"])
    rows = [[LOG(0.2)] * 5] * 9
    rows[1] = [LOG(0.05)] * 4 + [LOG(0.05)]  # uniform over 1..5 though the five hold 25 % of the mass
    rows[5] = digits(d1=0.1, d5=0.1)         # 1 and 5 equally likely
    scores, _ = expected_scores(text, starts, rows, "vqa")
    assert scores[0] == pytest.approx(np.mean([1.9, 2.9, 3.9, 4.9, 5.0]))  # 5.9 is clipped to 5
    assert scores[1] == pytest.approx(3.0)


def test_a_leading_digit_merged_into_a_longer_token_keeps_its_greedy_value_and_is_counted():
    text, starts = tokens_of(["<answer>", "3.", "45", "\n", "2", ".", "10", "</answer>"])  # "3." is one token
    rows = [digits(d5=1.0)] * 8
    scores, fallbacks = expected_scores(text, starts, rows, "vqa")
    assert fallbacks == 1 and scores == pytest.approx([3.45, 5.0])  # 5.10, on the scale


def test_no_per_token_data_or_no_parse():
    answer = format_answer("fine", [3.0, 2.0])
    scores, fallbacks = expected_scores(answer, None, None, "vqa")
    assert fallbacks == 2 and scores == pytest.approx([3.0, 2.0])
    assert expected_scores("<answer>3.0</answer>", [0], [digits(d3=1.0)], "vqa") == (None, 0)


# --------------------------------------------------------------------------- the model's own probabilities


@pytest.fixture(scope="module")
def requests_(generated_data):
    from qadata.manifest import items, read_manifest
    from qadata.media import load_image
    from rewards.answer_format import chat_messages
    from rollouts.backend import RolloutRequest

    chosen = items(read_manifest(generated_data), "test")[::20][:6]
    return [RolloutRequest(i.item_id, [load_image(i.path)], chat_messages("iqa", 1), "iqa") for i in chosen]


def expected_sampling(max_new_tokens: int = 96):
    from helpers import base_config
    from rollouts.backend import SamplingSettings

    cfg = base_config("eval.readout=expected", f"eval.max_new_tokens={max_new_tokens}")
    return SamplingSettings.evaluation(cfg.eval, cfg.rollout, 0)


def test_the_digit_log_probs_are_the_models_and_the_scores_do_not_depend_on_batching(tiny_model, requests_):
    from helpers import rollout_worker
    from models.sequences import join_prompt_and_completions

    settings = expected_sampling()
    assert settings.greedy and settings.n == 1 and settings.digit_logprobs
    worker = rollout_worker(tiny_model, "rollout.prompt_chunk=8")
    answers = [row[0] for row in worker.generate(requests_, settings)]
    parsed = [expected_scores(a.text, a.token_starts, a.digit_logprobs, "iqa") for a in answers]
    assert sum(v is not None for v, _ in parsed) >= 3, [a.text for a in answers]
    assert all(f == 0 for v, f in parsed if v is not None)  # the tiny BPE's "d.dd" starts with a one-digit token
    # Teacher-forced, temperature 1: the same log-probs of "1".."5" at every answer position.
    backend = worker.backend
    prompts = backend.processor.encode([r.messages for r in requests_], [r.images for r in requests_])
    inputs, _ = join_prompt_and_completions(prompts, [a.token_ids for a in answers], backend.processor.pad_id)
    width = inputs["input_ids"].shape[1] - prompts["input_ids"].shape[1]
    with torch.no_grad():
        logits = backend.model(**inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1, :]
    ids = [backend.processor.tokenizer.convert_tokens_to_ids(d) for d in "12345"]
    full = logits.float().log_softmax(dim=-1)[:, :, ids]
    for row, answer in enumerate(answers):
        fresh = full[row, : len(answer.token_ids)]
        torch.testing.assert_close(torch.tensor(answer.digit_logprobs), fresh, atol=1e-4, rtol=0)
    # Chunks of 8, one at a time, reversed order: the very same numbers.
    other = rollout_worker(tiny_model, "rollout.prompt_chunk=1")
    reversed_answers = [row[0] for row in other.generate(requests_[::-1], settings)][::-1]
    for a, b in zip(answers, reversed_answers):
        assert a.token_ids == b.token_ids and a.digit_logprobs == b.digit_logprobs


# Run as its own process: a Ray started inside the test process would meet the auth token an earlier test's
# cluster left cached there.
SCORE_TWICE = """
import json, sys
import ray
from evaluation.prediction import predict, start_scorers
from helpers import local_config
from qadata.manifest import items, read_manifest
from qadata.media import load_image
from rewards.answer_format import chat_messages
from rollouts.backend import RolloutRequest, SamplingSettings

model, manifest = sys.argv[1:3]
chosen = items(read_manifest(manifest), "test")[::20][:6]
by_id = {i.item_id: RolloutRequest(i.item_id, [load_image(i.path)], chat_messages("iqa", 1), "iqa") for i in chosen}
ids = list(by_id)
cfg = local_config(model, "eval.readout=expected", "eval.max_new_tokens=96", "rollout.num_actors=2", "ray.num_cpus=3")
settings = SamplingSettings.evaluation(cfg.eval, cfg.rollout, 0)
scorers = start_scorers(cfg)
# One chunk of 6 goes to the first actor alone; chunks of 2 in reverse order go to both.
runs = [{p.item_id: [p.score, p.aspects]
         for p in predict(scorers, order, by_id.__getitem__, str, "iqa", settings, batch)}
        for batch, order in ((6, ids), (2, ids[::-1]))]
scorers.end()
ray.shutdown()
print("RUNS " + json.dumps(runs))
"""


def test_expected_scores_are_identical_whatever_batch_size_order_and_actor_count(tiny_model, generated_data):
    import json
    import os

    from helpers import ROOT, run_cli

    result = run_cli(["-c", SCORE_TWICE, str(tiny_model), str(generated_data)],
                     env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    first, second = json.loads(result.stdout.split("RUNS ", 1)[1])
    assert first == second and any(score is not None for score, _ in first.values())
