"""The vLLM rollout backend on vLLM's CPU build (`make test-vllm`, its own environment): a tiny Qwen2
*text* model built here. G samples per prompt with token ids and log-probs checked against transformers;
a learner step (GRPO loss, AdamW) on the transformers copy, its weights synced into the engine, which then
answers as the new weights do; prompts over the context named (fail) or skipped. Pictures:
test_vllm_pictures.py; the whole loop: test_vllm_training.py. Skipped where vLLM is not installed.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from actors.grpo_objective import grpo_loss
from helpers import rollout_worker, sampling
from models.tiny_model import build_text
from models.weights import sample_checksums
from rewards.answer_format import chat_messages
from rollouts.backend import RolloutRequest
from rollouts.vllm_backend import VLLMRolloutBackend, call_with_timeout

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: 2 s to start, not 15
vllm = pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` builds its environment")

TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return build_text(tmp_path_factory.mktemp("vllm") / "tiny-text")


@pytest.fixture(scope="module")
def worker(model_folder):
    """The rollout role as Ray runs it (in-process here: the lane has no Ray), vLLM behind it."""
    # the KV cache in bytes: a share of RAM breaks on some NUMA layouts
    return rollout_worker(model_folder, "rollout.backend=vllm", "rollout.vllm.max_model_len=256",
                          "rollout.vllm.enforce_eager=true", "rollout.vllm.on_oversized=skip",
                          f"rollout.vllm.kv_cache_bytes={1 << 30}")


@pytest.fixture(scope="module")
def backend(worker):
    assert isinstance(worker.backend, VLLMRolloutBackend)
    return worker.backend


@pytest.fixture(scope="module")
def reference(model_folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_folder, torch_dtype=torch.float32)


def requests(count: int) -> list[RolloutRequest]:
    return [RolloutRequest(f"item{k}", [], chat_messages("iqa", 0), "iqa") for k in range(count)]


def prompt_ids(backend, request) -> list[int]:
    text = backend.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
    return backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def hf_logprobs(model, prompt: list[int], answer: list[int], temperature: float, banned: list[int]) -> torch.Tensor:
    """[len(answer)] log-probs of `answer` after `prompt` at `temperature`, `banned` tokens excluded as the
    backend excludes picture tokens from answers (on a random model they hold ~0.7% of the mass)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1].float() / temperature
    logits[:, banned] = -float("inf")
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(answer)[:, None]).squeeze(-1)


def test_g_samples_per_prompt_with_the_learners_log_probs(backend, reference):
    settings = sampling(n=4, temperature=TEMPERATURE, max_new_tokens=16, seed=0)
    answers = backend.generate(requests(2), settings)
    assert [len(a) for a in answers] == [4, 4]
    ids = prompt_ids(backend, requests(1)[0])
    for completion in answers[0]:
        assert 0 < len(completion.token_ids) <= 16 and len(completion.logprobs) == len(completion.token_ids)
        assert not set(completion.token_ids) & set(backend.vision_ids)
        expected = hf_logprobs(reference, ids, completion.token_ids, TEMPERATURE, backend.vision_ids)
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)
    assert len({tuple(c.token_ids) for c in answers[0]}) > 1  # G different answers


def test_a_learner_step_synced_in_is_what_the_engine_then_generates(worker, backend, reference):
    request = requests(1)[0]
    ids = prompt_ids(backend, request)
    greedy = sampling(n=1, max_new_tokens=12, greedy=True)
    before = backend.generate([request], greedy)[0][0].token_ids
    # One learner update on the transformers copy: GRPO loss over the engine's own samples.
    samples = backend.generate([request], sampling(n=4, temperature=1.0, max_new_tokens=12, seed=1))[0]
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.05)
    width = max(len(s.token_ids) for s in samples)
    logprobs, mask = torch.zeros(len(samples), width), torch.zeros(len(samples), width)
    for row, s in enumerate(samples):
        with torch.enable_grad():
            logits = reference(torch.tensor([ids + s.token_ids])).logits[0, len(ids) - 1 : -1]
        logprobs[row, : len(s.token_ids)] = torch.log_softmax(logits, -1).gather(
            -1, torch.tensor(s.token_ids)[:, None]).squeeze(-1)
        mask[row, : len(s.token_ids)] = 1
    loss, _ = grpo_loss(logprobs, logprobs.detach(), None, torch.tensor([1.0, -1.0, 1.0, -1.0]), mask,
                        clip_low=0.2, clip_high=0.2, kl_coef=0.0, kl_estimator="k3", aggregation="seq-mean-token-mean")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    reference.eval()

    synced = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    assert worker.load_weights(synced, 1) == sample_checksums(synced)  # what it received, before vLLM fuses it
    after = backend.generate([request], greedy)[0][0].token_ids
    with torch.no_grad():
        expected = reference.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                      eos_token_id=backend.eos_ids)[0, len(ids):].tolist()
    assert after == expected[: len(after)] and after != before
    sampled = backend.generate([request], sampling(n=2, temperature=TEMPERATURE, max_new_tokens=12, seed=2))
    for completion in sampled[0]:
        expected = hf_logprobs(reference, ids, completion.token_ids, TEMPERATURE, backend.vision_ids)
        gap = torch.tensor(completion.logprobs) - expected
        assert gap.abs().max() < 1e-4  # the engine samples from exactly the learner's new policy


def test_prompts_over_the_context_are_named_and_skipped_or_refused(backend, model_folder):
    long = RolloutRequest("too-long.jpg", [], [{"role": "user", "content": [{"type": "text", "text": "word " * 300}]}],
                          "iqa")
    answers = backend.generate([long, requests(1)[0]], sampling(n=2, max_new_tokens=8, seed=0))
    assert [c.token_ids for c in answers[0]] == [[], []] and all(c.token_ids for c in answers[1])
    assert "too-long.jpg" in backend.skipped[-1] and "max_model_len 256" in backend.skipped[-1]
    kept = backend.settings
    backend.settings = replace(kept, on_oversized="fail")
    try:
        with pytest.raises(ValueError, match="too-long.jpg"):
            backend.generate([long], sampling(n=1, max_new_tokens=8))
    finally:
        backend.settings = kept


def test_a_stuck_sync_becomes_a_clear_error():
    import time

    with pytest.raises(TimeoutError, match="weight sync to version 3 did not finish within 1 s"):
        call_with_timeout("weight sync to version 3", 1.0, time.sleep, 5)
