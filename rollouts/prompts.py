"""The PreResQ task as chat messages: the question asked of each image or video.

The answer format itself (what the format reward accepts) lives in `rewards.prpo`.
"""

from __future__ import annotations

IQA_ASPECTS = ("saturation", "granularity", "sharpness", "foreground", "background")
VQA_SCORES = ("global", "local")

IQA_QUESTION = (
    "Rate the quality of this image. Describe it in five parts: saturation, granularity, "
    "sharpness, foreground and background, and give each part a score between 1 and 5 "
    "with two decimals (1 is very poor, 5 is excellent). "
    "First think inside <think></think>, then write the five scores, one per line, "
    "inside <answer></answer>."
)

VQA_QUESTION = (
    "The first picture packs frames sampled across the whole video; compare them over time. "
    "The next pictures are single frames at full resolution; describe their saturation, "
    "granularity, sharpness, foreground and background. Then give two scores between 1 and 5 "
    "with two decimals: the global score of the whole video and the local score of the frames. "
    "First think inside <think></think>, then write the two scores, one per line, "
    "inside <answer></answer>."
)


def question_for(task: str) -> str:
    if task == "iqa":
        return IQA_QUESTION
    if task == "vqa":
        return VQA_QUESTION
    raise ValueError(f"unknown task {task!r}: expected 'iqa' or 'vqa'")


def chat_messages(task: str, num_images: int) -> list[dict]:
    """One user turn: `num_images` image slots, then the question."""
    content = [{"type": "image"} for _ in range(num_images)]
    content.append({"type": "text", "text": question_for(task)})
    return [{"role": "user", "content": content}]
