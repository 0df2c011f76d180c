"""One pass of each prompt, pictures included, for all of a group's answers: in the learner the same loss and
gradients as one row per answer, in the rollout the same log-probs the learner recomputes."""

from __future__ import annotations

import pytest
import torch

from helpers import rollout_worker, sampling
from models.loading import load_policy
from models.processor import QualityProcessor
from models.sequences import completion_logprobs, grouped_logprobs
from qadata.manifest import items, read_manifest
from qadata.media import load_image
from rewards.answer_format import chat_messages
from rollouts.backend import RolloutRequest

G = 3


@pytest.fixture(scope="module")
def requests_(generated_data):
    chosen = items(read_manifest(generated_data), "train")[:3]
    return [RolloutRequest(i.item_id, [load_image(i.path)], chat_messages("iqa", 1), "iqa") for i in chosen]


def pictures_seen(model) -> list[int]:
    """Rows of pixel patches each vision-tower call gets (a forward hook on the tower)."""
    seen: list[int] = []
    model.model.visual.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    return seen


def test_shared_prompt_pass_gives_the_per_answer_loss_and_gradients(tiny_model, requests_):
    torch.manual_seed(0)
    model = load_policy(tiny_model, "float32", "cpu")
    processor = QualityProcessor(tiny_model)
    rows = [i for i in range(len(requests_)) for _ in range(G)]
    lengths = [3, 11, 7, 1, 9, 5, 12, 2, 6]  # answers of different lengths: right padding in the batch
    answers = [torch.randint(10, 200, (n,)).tolist() for n in lengths]
    advantages = torch.randn(len(answers))
    seen = pictures_seen(model)

    def loss_and_grads(logprobs, mask):
        loss = -((logprobs * mask).sum(1) / mask.sum(1) * advantages).mean()
        model.zero_grad()
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    per_answer = processor.encode([requests_[r].messages for r in rows], [requests_[r].images for r in rows])
    lp_rows, _, mask_rows = completion_logprobs(model, per_answer, answers, processor.pad_id, 0.6)
    loss_rows, grads_rows = loss_and_grads(lp_rows, mask_rows)
    distinct = processor.encode([r.messages for r in requests_], [r.images for r in requests_])
    lp_shared, _, mask_shared = grouped_logprobs(model, distinct, rows, answers, processor.pad_id, 0.6)
    loss_shared, grads_shared = loss_and_grads(lp_shared, mask_shared)

    assert torch.equal(mask_rows, mask_shared)
    torch.testing.assert_close(lp_shared * mask_shared, lp_rows * mask_rows, atol=1e-5, rtol=0)
    assert loss_shared == pytest.approx(loss_rows, abs=1e-5)
    vision = [n for n in grads_rows if ".visual." in f".{n}"]
    assert vision and all(grads_rows[n].abs().max() > 0 for n in vision[:3])  # the tower is trained through
    for name, grad in grads_rows.items():
        torch.testing.assert_close(grads_shared[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # The tower saw every picture G times per answer row, then each picture once.
    patches = distinct["pixel_values"].shape[0]
    assert seen == [G * patches, patches]


def test_rollout_runs_each_prompt_once_and_samples_the_learners_log_probs(tiny_model, requests_):
    worker = rollout_worker(tiny_model)
    seen = pictures_seen(worker.backend.model)
    answers = worker.generate(requests_, sampling(n=4, temperature=0.7, max_new_tokens=24, seed=3))
    patches = worker.backend.processor.encode([r.messages for r in requests_],
                                              [r.images for r in requests_])["pixel_values"].shape[0]
    assert seen == [patches]  # one prefill of the 3 prompts, not 12 prompt rows
    assert [len(row) for row in answers] == [4, 4, 4] and len({tuple(c.token_ids) for c in answers[0]}) > 1
    backend = worker.backend
    flat = [(r, c) for r, row in zip(requests_, answers) for c in row]
    prompts = backend.processor.encode([r.messages for r, _ in flat], [r.images for r, _ in flat])
    with torch.no_grad():
        recomputed, _, mask = completion_logprobs(backend.model, prompts, [c.token_ids for _, c in flat],
                                                  backend.processor.pad_id, 0.7)
    for row, (_, c) in enumerate(flat):
        assert 0 < len(c.token_ids) <= 24 and not set(c.token_ids) & set(backend.processor.vision_ids)
        torch.testing.assert_close(torch.tensor(c.logprobs), recomputed[row, : len(c.token_ids)], atol=1e-4, rtol=0)
    greedy = worker.generate(requests_[:1], sampling(n=1, greedy=True, max_new_tokens=24))[0][0]
    again = worker.generate(requests_[:1], sampling(n=1, greedy=True, max_new_tokens=24, seed=99))[0][0]
    assert greedy.token_ids == again.token_ids
