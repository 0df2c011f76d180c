"""The PreResQ answer format, in one place: the question asked, the answer layout, how answers are read.

Used by the prompts (rollouts), the tiny model's warm-up, the reward and evaluation. An image (IQA) is
answered with five aspect scores, a video (VQA) with a global and a local score, each on [1, 5] with two
decimals, one per line, after a `<think>` (ALGORITHM.md, "Answers").
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

IQA_ASPECTS = ("saturation", "granularity", "sharpness", "foreground", "background")
VQA_SCORES = ("global", "local")
ANSWER_DIMS = {"iqa": len(IQA_ASPECTS), "vqa": len(VQA_SCORES)}
TASK_OF_KIND = {"image": "iqa", "video": "vqa"}  # the task `data.task: auto` gives each media kind

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

# The questions a training prompt may ask (data.question: pool), each task's canonical question first: the
# paper's first stage asks each picture one of several wordings (PreResQ-R1 keeps five; these are ours). Every
# wording asks for the same answer: the same parts in the same order, the same scale and layout.
QUESTIONS = {
    "iqa": (
        IQA_QUESTION,
        "How good is this image? Look at its saturation, granularity, sharpness, foreground and background in "
        "turn and score each between 1 and 5 with two decimals (1 is very poor, 5 is excellent). Reason inside "
        "<think></think> first, then put the five scores, one per line, inside <answer></answer>.",
        "Judge the visual quality of the picture. For each of saturation, granularity, sharpness, foreground and "
        "background, give a score between 1 and 5 with two decimals, where 1 is very poor and 5 is excellent. "
        "Think it through inside <think></think>, then list the five scores, one per line, inside "
        "<answer></answer>.",
        "Assess this photo as a careful viewer would: describe its saturation, granularity, sharpness, foreground "
        "and background, and score each part between 1 and 5 with two decimals (1 is very poor, 5 is excellent). "
        "Write your reasoning inside <think></think> and then the five scores, one per line, inside "
        "<answer></answer>.",
        "What is the quality of this image? Consider saturation, granularity, sharpness, foreground and "
        "background, scoring each between 1 and 5 with two decimals (1 is very poor, 5 is excellent). Start "
        "with your thoughts inside <think></think>; after that write the five scores, one per line, inside "
        "<answer></answer>.",
    ),
    "vqa": (
        VQA_QUESTION,
        "The first picture is a grid of frames taken across the whole video: compare them over time. The pictures "
        "after it are single frames at full resolution: describe their saturation, granularity, sharpness, "
        "foreground and background. Then give two scores between 1 and 5 with two decimals: first the global "
        "score of the whole video, then the local score of the frames. Think inside <think></think> first, then "
        "write the two scores, one per line, inside <answer></answer>.",
        "Judge the quality of this video. Its first picture packs frames from start to end (see how they change "
        "over time); the rest are single frames at full resolution (see their saturation, granularity, "
        "sharpness, foreground and background). Give two scores between 1 and 5 with two decimals: the global "
        "score of the whole video and then the local score of the frames. Reason inside <think></think>, then "
        "write the two scores, one per line, inside <answer></answer>.",
    ),
}
QUESTION_CHOICES = ("single", "pool")  # data.question: the canonical question, or a wording per item

SCALE = (1.0, 5.0)  # every score's range
SCORE_DIGITS = "12345"  # the leading digits a score on SCALE can have
NUMBER_BOUND = 100.0  # far off the [1, 5] scale, and small enough that no reward term overflows
_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")
_FORMAT_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def answer_dims(task: str) -> int:
    try:
        return ANSWER_DIMS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}: expected one of {sorted(ANSWER_DIMS)}") from None


def question_for(task: str, wording: int = 0) -> str:
    """The task's question in wording `wording` of QUESTIONS (0: the canonical one, which evaluation asks)."""
    answer_dims(task)
    return QUESTIONS[task][wording]


def wording_for(item_id: str, seed: int, task: str) -> int:
    """The wording a training prompt asks under data.question pool: fixed by the item and the step's sampling
    seed (so all G answers share one prompt, and a redone step may ask another)."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % len(QUESTIONS[task])


def chat_messages(task: str, num_images: int, wording: int = 0) -> list[dict]:
    """One user turn: `num_images` image slots, then the question (in `wording`)."""
    content = [{"type": "image"} for _ in range(num_images)]
    content.append({"type": "text", "text": question_for(task, wording)})
    return [{"role": "user", "content": content}]


def format_answer(think: str, scores) -> str:
    """The canonical completion for a reasoning text and D scores (two decimals)."""
    lines = "\n".join(f"{float(s):.2f}" for s in scores)
    return f"<think>{think}</think><answer>\n{lines}\n</answer>"


def parse_answer(text: str, task: str) -> np.ndarray:
    """Completion text -> answer vector [D] by the reference rule (what the reward reads).

    The last D numbers in the text, each clipped to +-NUMBER_BOUND; fewer than D are padded with the
    first number found; none gives 3.0 everywhere.
    """
    dims = answer_dims(task)
    # Bounded: a long run of digits would otherwise become 1e159 or inf, and the reward NaN.
    numbers = [min(max(float(x), -NUMBER_BOUND), NUMBER_BOUND) for x in _NUMBER.findall(text)]
    if not numbers:
        return np.full(dims, 3.0)
    vector = numbers[-dims:]
    vector += [numbers[0]] * (dims - len(vector))
    return np.asarray(vector, dtype=np.float64)


def parse_answers(texts: list[list[str]], task: str) -> np.ndarray:
    """Nested completions [B][K] -> answer vectors [B, K, D]."""
    return np.stack([np.stack([parse_answer(t, task) for t in row]) for row in texts])


def read_scores(text: str, task: str) -> np.ndarray | None:
    """The strict parse used for evaluation: the D numbers of the last `<answer>` block, or None.

    None (a parse failure) when there is no closed answer block, it holds other than D numbers, or
    a number is off the [1, 5] scale. Unlike `parse_answer`, nothing is guessed or padded.
    """
    found = score_spans(text, task)
    return None if found is None else np.asarray([value for _, value in found])


def score_spans(text: str, task: str) -> list[tuple[int, float]] | None:
    """`read_scores`' D numbers with where each starts in `text` (a character index, its sign included)."""
    blocks = list(_ANSWER_BLOCK.finditer(text))
    if not blocks:
        return None
    block = blocks[-1]
    numbers = list(re.finditer(_FORMAT_NUMBER, block.group(1)))
    if len(numbers) != answer_dims(task):
        return None
    found = [(block.start(1) + m.start(), float(m.group())) for m in numbers]
    return found if all(SCALE[0] <= value <= SCALE[1] for _, value in found) else None


def _format_pattern(task: str) -> re.Pattern:
    dims = answer_dims(task)
    numbers = rf"{_FORMAT_NUMBER}(?:[ \t]*\n\s*{_FORMAT_NUMBER}){{{dims - 1}}}"
    return re.compile(rf"\s*<think>.*?</think>\s*<answer>\s*{numbers}\s*</answer>\s*", re.DOTALL)


_FORMAT_PATTERNS = {task: _format_pattern(task) for task in ANSWER_DIMS}


def well_formed(text: str, task: str) -> bool:
    """The whole completion is `<think>…</think><answer>` D lines of numbers `</answer>`."""
    answer_dims(task)
    return _FORMAT_PATTERNS[task].fullmatch(text) is not None


def reasoning(text: str) -> str | None:
    """The text inside the first `<think>` block, stripped; None without one."""
    think = _THINK.search(text)
    return think.group(1).strip() if think else None
