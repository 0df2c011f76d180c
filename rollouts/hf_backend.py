"""Rollout backend on transformers' `generate`: CPU for local runs and tests, GPU without vLLM."""

from __future__ import annotations

from typing import Mapping

import torch

from rollouts.backend import Completion, RolloutRequest, SamplingSettings
from rollouts.model_loading import load_policy
from rollouts.processor import QualityProcessor


class HFRolloutBackend:
    """model, rollout: the config's sections (ModelConfig, RolloutConfig)."""

    def __init__(self, model, rollout):
        self.processor = QualityProcessor(model.path, model.min_pixels, model.max_pixels)
        self.model = load_policy(model.path, dtype=model.dtype, device=rollout.device)
        self.model.eval()
        self.device = rollout.device
        self.prompt_chunk = rollout.prompt_chunk
        self._version = 0

    @torch.no_grad()
    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings) -> list[list[Completion]]:
        answers: list[list[Completion]] = []
        for start in range(0, len(requests), self.prompt_chunk):
            answers += self._generate_chunk(requests[start : start + self.prompt_chunk], sampling)
        return answers

    def _generate_chunk(self, requests: list[RolloutRequest], sampling: SamplingSettings) -> list[list[Completion]]:
        n = 1 if sampling.greedy else sampling.n
        # One row per sample: simple and exact; the vision tower runs n times per image.
        messages = [r.messages for r in requests for _ in range(n)]
        images = [r.images for r in requests for _ in range(n)]
        inputs = {k: v.to(self.device) for k, v in self.processor.encode(messages, images).items()}
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        out = self.model.generate(
            **inputs,
            do_sample=not sampling.greedy,
            temperature=sampling.temperature if not sampling.greedy else None,
            top_p=sampling.top_p if not sampling.greedy else None,
            top_k=sampling.top_k if not sampling.greedy else None,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.processor.eos_ids,
            pad_token_id=self.processor.pad_id,
            # Vision tokens sampled into an answer break the training forward.
            suppress_tokens=self.processor.vision_ids,
            output_logits=True,
            return_dict_in_generate=True,
        )
        prompt_width = inputs["input_ids"].shape[1]
        generated = out.sequences[:, prompt_width:].cpu()
        temperature = 1.0 if sampling.greedy else sampling.temperature
        # One [N, V] step at a time: stacking all steps would hold N x C x V floats (GBs at a 152k vocab).
        logprobs = torch.stack(
            [
                torch.log_softmax(step.float() / temperature, dim=-1)
                .gather(-1, generated[:, t : t + 1].to(step.device))
                .squeeze(-1)
                .cpu()
                for t, step in enumerate(out.logits)
            ],
            dim=1,
        )  # [N, C]
        eos = set(self.processor.eos_ids)
        completions = []
        for row in range(generated.shape[0]):
            tokens = generated[row].tolist()
            length = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
            tokens = tokens[:length]
            completions.append(
                Completion(
                    token_ids=tokens,
                    text=self.processor.decode(tokens),
                    logprobs=logprobs[row, :length].tolist(),
                    finished=tokens[-1] in eos if tokens else False,
                )
            )
        return [completions[i * n : (i + 1) * n] for i in range(len(requests))]

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: int) -> None:
        self.model.load_state_dict(dict(weights), strict=True)
        self._version = version

    def weights_version(self) -> int:
        return self._version

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()
