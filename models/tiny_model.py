"""The embedded default model: a tiny random-initialised Qwen2.5-VL, built offline.

It has the real architecture, a byte-level BPE tokenizer trained here on the task's own text, a
Qwen-style chat template and the stock Qwen2-VL image processor, all saved in Hugging Face format
so that every other part of preresq loads it with `from_pretrained` like any checkpoint.
A short supervised warm-up on answers with random scores teaches it the answer format, not quality
(the role a pretrained instruct model plays in the paper).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.processor import QualityProcessor
from rewards.answer_format import IQA_ASPECTS, IQA_QUESTION, VQA_QUESTION, answer_dims, format_answer

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen's layout, without its default system prompt (the tiny model never needs one).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_OPINIONS = {
    "saturation": ["vivid", "dull", "natural", "washed out", "rich"],
    "granularity": ["fine", "coarse", "grainy", "clean", "smooth"],
    "sharpness": ["sharp", "soft", "blurry", "crisp", "clear"],
    "foreground": ["clear", "dark", "bright", "detailed", "flat"],
    "background": ["plain", "busy", "dim", "even", "noisy"],
}


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the model; image side in pixels (a multiple of 28). `vocab` is the BPE tokenizer's; `model_vocab`
    the embedding's rows (None: the tokenizer's). The None sizes follow from the others, as the tiny model has them:
    kv_heads = heads, intermediate = 2 x hidden, vision_intermediate = 2 x vision_hidden, full attention in the
    last vision block only (else every `full_attention_every`-th)."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    vision_hidden: int = 64
    vision_depth: int = 2
    vocab: int = 600
    image_side: int = 112
    seed: int = 0
    kv_heads: int | None = None
    intermediate: int | None = None
    vision_heads: int = 4
    vision_intermediate: int | None = None
    vision_window: int = 56
    full_attention_every: int | None = None
    model_vocab: int | None = None
    tie_embeddings: bool = False


# Qwen2.5-VL-3B-Instruct's shape (its config.json), with the tiny model's tokenizer: random weights, for speed and
# memory figures on a GPU (benchmarks/hf_backend_device.py).
QWEN25_VL_3B = TinyModelSpec(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, vision_hidden=1280,
                             vision_depth=32, vision_heads=16, vision_intermediate=3420, vision_window=112,
                             full_attention_every=8, model_vocab=151936, tie_embeddings=True, image_side=448)


def reasoning_text(rng: random.Random) -> str:
    """A short, image-independent description in the five aspects."""
    parts = rng.sample(IQA_ASPECTS, k=2)
    return " ".join(f"The {aspect} is {rng.choice(_OPINIONS[aspect])}." for aspect in parts)


def _grade(value: float, bounds: list[float], words: list[str]) -> str:
    return words[sum(value >= b for b in bounds)]


def describe_image(image) -> str:
    """What the picture looks like, from its pixels alone: exposure, colourfulness, contrast.

    This is perception a pretrained VLM brings (the image is dark, the colours are muted), not a
    judgement of quality: no label is used, and the warm-up pairs it with random scores.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    luminance = pixels @ np.array([0.299, 0.587, 0.114])
    chroma = (pixels.max(axis=-1) - pixels.min(axis=-1)).mean()
    exposure = _grade(luminance.mean(), [0.2, 0.33, 0.55, 0.7], ["dark", "dim", "balanced", "bright", "washed out"])
    colour = _grade(chroma, [0.05, 0.1, 0.17], ["grey", "muted", "natural", "vivid"])
    contrast = _grade(luminance.std(), [0.06, 0.1, 0.15], ["flat", "soft", "normal", "punchy"])
    return f"The exposure is {exposure}, the saturation is {colour} and the contrast is {contrast}."


def random_completion(rng: random.Random, task: str, think: str | None = None, score: float | None = None) -> str:
    """A well-formed answer with random scores on [1, 5], or each `score` (and `think`, or random reasoning)."""
    scores = [rng.uniform(1.0, 5.0) if score is None else score for _ in range(answer_dims(task))]
    return format_answer(think if think is not None else reasoning_text(rng), scores)


def _tokenizer_corpus(rng: random.Random) -> list[str]:
    corpus = [IQA_QUESTION, VQA_QUESTION, CHAT_TEMPLATE]
    corpus += [random_completion(rng, "iqa") for _ in range(3000)]
    corpus += [
        f"The exposure is {e}, the saturation is {c} and the contrast is {k}."
        for e in ("dark", "dim", "balanced", "bright", "washed out")
        for c in ("grey", "muted", "natural", "vivid")
        for k in ("flat", "soft", "normal", "punchy")
    ] * 20
    corpus += [random_completion(rng, "vqa") for _ in range(500)]
    return corpus


def build_tokenizer(spec: TinyModelSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(random.Random(spec.seed)), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_image_processor(spec: TinyModelSpec):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    pixels = spec.image_side * spec.image_side
    return Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels)


def build_model(spec: TinyModelSpec, tokenizer):
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = model_config(spec, tokenizer)
    torch.manual_seed(spec.seed)
    return _stop_at_end_tokens(Qwen2_5_VLForConditionalGeneration(config), tokenizer)


def model_config(spec: TinyModelSpec, tokenizer):
    """The Qwen2_5_VLConfig of `spec` with the tokenizer's special tokens."""
    from transformers import Qwen2_5_VLConfig

    head_dim = spec.hidden // spec.heads
    # mrope splits the rotary half-dimension into (time, height, width), like Qwen's [16, 24, 24].
    half = head_dim // 2
    height = (half - half // 4) // 2
    mrope_section = [half // 4, height, half - half // 4 - height]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    every = spec.full_attention_every
    full_attention = list(range(every - 1, spec.vision_depth, every)) if every else [spec.vision_depth - 1]
    return Qwen2_5_VLConfig(
        text_config={
            **_text_settings(spec, tokenizer),
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate or spec.vision_hidden * 2,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.hidden,
            "fullatt_block_indexes": full_attention,
            "window_size": spec.vision_window,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec.tie_embeddings,
    )


def _text_settings(spec: TinyModelSpec, tokenizer) -> dict:
    """The language model's size and special tokens, shared by the VL model and the text-only one."""
    end, im_end = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    return {"vocab_size": spec.model_vocab or len(tokenizer), "hidden_size": spec.hidden,
            "intermediate_size": spec.intermediate or spec.hidden * 2, "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads, "num_key_value_heads": spec.kv_heads or spec.heads,
            "max_position_embeddings": 2048, "bos_token_id": end, "eos_token_id": im_end, "pad_token_id": end}


def _stop_at_end_tokens(model, tokenizer):
    """generate() stops at <|im_end|> or <|endoftext|> and pads with the latter."""
    end, im_end = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.eos_token_id = [im_end, end]
    model.generation_config.pad_token_id = end
    return model


def build_text(folder: str | Path, spec: TinyModelSpec = TinyModelSpec(heads=2)) -> Path:
    """A tiny Qwen2 *text* model with the same tokenizer and chat template: what vLLM's CPU build can
    run (its Qwen2.5-VL path needs a torchvision that CPU torch lacks). vLLM's CPU attention wants
    head_dim >= 64, hence 2 heads of 64."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(spec)
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(Qwen2Config(**_text_settings(spec, tokenizer), tie_word_embeddings=False))
    _stop_at_end_tokens(model, tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build(folder: str | Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Write an untrained tiny model, tokenizer and processor to `folder`."""
    folder = Path(folder)
    tokenizer = build_tokenizer(spec)
    model = build_model(spec, tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    build_image_processor(spec).save_pretrained(folder)
    (folder / "preresq_tiny.json").write_text(json.dumps(spec.__dict__, indent=2))
    return folder


def warm_up(
    folder: str | Path,
    images: list,
    steps: int = 300,
    batch: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 50,
    videos: list | None = None,
    video_every: int = 4,
    scores: list[float] | None = None,
) -> dict:
    """Supervised format warm-up in place: answers that describe each image's look (from its pixels)
    and give random scores. The learning rate decays linearly to zero.

    videos: optional clips as their pictures ([grid, local frames...], qadata.video); then every
    `video_every`-th step is a VQA batch (global and local scores, the grid described).
    scores: optional, one per image on [1, 5]: its answers give that score instead of a random one (a model
    whose scores tell the pictures apart).
    Returns {"steps", "loss", "seconds"}. Loss is over the completion tokens only.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    from models.sequences import join_prompt_and_completions
    from rewards.answer_format import QUESTIONS, chat_messages

    folder = Path(folder)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    processor = QualityProcessor(folder)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    sets = {"iqa": [[image] for image in images], "vqa": list(videos or [])}
    descriptions = {task: [describe_image(pictures[0]) for pictures in sets[task]] for task in sets}
    tokenizer = processor.tokenizer
    start, loss = time.time(), float("nan")
    for step in range(steps):
        task = "vqa" if sets["vqa"] and step % video_every == video_every - 1 else "iqa"
        picked = [rng.randrange(len(sets[task])) for _ in range(batch)]
        # Every wording of the question in turn (data.question: pool asks them in training)
        prompts = processor.encode([chat_messages(task, len(sets[task][i]), (step * batch + j) % len(QUESTIONS[task]))
                                    for j, i in enumerate(picked)], [sets[task][i] for i in picked])
        answers = [
            tokenizer(random_completion(rng, task, descriptions[task][i],
                                        scores[i] if scores is not None and task == "iqa" else None))["input_ids"]
            + [tokenizer.eos_token_id]
            for i in picked
        ]
        inputs, completion_mask = join_prompt_and_completions(prompts, answers, processor.pad_id)
        labels = torch.where(completion_mask.bool(), inputs["input_ids"], -100)
        out = model(**inputs, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        schedule.step()
        loss = float(out.loss.detach())
        if log_every and (step + 1) % log_every == 0:
            print(f"warm-up step {step + 1}/{steps} loss {loss:.3f} ({time.time() - start:.0f}s)", flush=True)
    model.save_pretrained(folder)
    return {"steps": steps, "loss": loss, "seconds": time.time() - start}
