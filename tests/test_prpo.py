"""The PRPO reward against hand-computed cases (ALGORITHM.md) and a literal
transcription of the formulas for larger random batches."""

import math

import numpy as np
import pytest

from actors.reward import RewardWorker
from helpers import reward_section
from rewards import answer_format, prpo
from rewards.prpo_literal import literal_pairwise, literal_triplet_ranking

# The paper's weights, as configs/base.yaml gives them.
W = prpo.PRPOWeights.from_config(reward_section())


def iqa(*answers):
    """[K] answers, each the same value on all five aspects -> [1, K, 5]."""
    return np.array([[[a] * 5 for a in answers]], dtype=float)


# ----------------------------------------------------------------------------- parsing and format


def test_parse_takes_last_d_numbers():
    text = "<think>score 7 of 10</think><answer>\n1.5\n2.5\n3.5\n4.5\n5.0\n</answer>"
    assert answer_format.parse_answer(text, "iqa").tolist() == [1.5, 2.5, 3.5, 4.5, 5.0]


def test_parse_pads_with_first_number_and_defaults_to_three():
    assert answer_format.parse_answer("<answer>4.5 3</answer>", "iqa").tolist() == [4.5, 3, 4.5, 4.5, 4.5]
    assert answer_format.parse_answer("no numbers here", "iqa").tolist() == [3.0] * 5
    assert answer_format.parse_answer("2.25 and .5", "vqa").tolist() == [2.25, 0.5]


def test_format_reward_requires_the_whole_completion():
    good = answer_format.format_answer("The sharpness is soft.", [3.1, 2.2, 4.0, 1.5, 5.0])
    cases = [
        good,
        good + " trailing words",
        good.replace("<think>", ""),
        answer_format.format_answer("x", [3.1, 2.2, 4.0, 1.5]),
        "<think>a</think>\n<answer>\n3\n4\n5\n1\n2\n</answer>\n",
    ]
    assert prpo.format_reward(cases, "iqa").tolist() == [1, 0, 0, 0, 1]
    assert prpo.format_reward([answer_format.format_answer("v", [3.0, 4.0]), good], "vqa").tolist() == [1, 0]


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="'xqa'"):
        prpo.format_reward(["x"], "xqa")


# ----------------------------------------------------------------------------- response branch


def test_std_penalty():
    vectors = np.array([[[3, 3, 3, 3, 3], [1, 2, 3, 4, 5], [3, 3, 3, 3, 3.5]]], dtype=float)
    # sigma = 0, sqrt(2), 0.2 -> 0.5 * max(0, 0.5 - sigma)
    np.testing.assert_allclose(prpo.std_penalty(vectors, W), [[0.25, 0.0, 0.15]])


def test_triplet_balance_middle_and_near_ends():
    np.testing.assert_allclose(prpo.triplet_balance(iqa(1, 2, 3), "iqa", W), [[0, 1, 0]])
    # 2.00 is within 0.05 of the middle 2.03; 3 is not.
    np.testing.assert_allclose(prpo.triplet_balance(iqa(2.0, 2.03, 3.0), "iqa", W), [[1, 1, 0]])
    # All equal: stable order makes answer 1 the middle, both ends are within tolerance.
    np.testing.assert_allclose(prpo.triplet_balance(iqa(2, 2, 2), "iqa", W), [[1, 1, 1]])


def test_triplet_balance_four_answers_and_background_ignored():
    vectors = iqa(1, 2, 3, 4)
    vectors[0, :, 4] = [9, 9, 9, 9]  # background is not looked at
    # Middles: (0,1,2)->1, (0,1,3)->1, (0,2,3)->2, (1,2,3)->2; each answer sits in 3 triples.
    np.testing.assert_allclose(prpo.triplet_balance(vectors, "iqa", W), [[0, 2 / 3, 2 / 3, 0]])


def test_triplet_balance_needs_three_answers():
    assert prpo.triplet_balance(iqa(1, 2), "iqa", W).tolist() == [[0, 0]]


def test_rank_to_mos():
    got = prpo.rank_to_mos(np.array([[2.0, 3.0, 4.0]]), np.array([3.01]), W)
    # ranks in [2, 3, 4, 3.01]: 0, 1, 3 and MOS 2; answer 1 is within 0.02.
    np.testing.assert_allclose(got, [[math.exp(-2 / 4), 1.0, math.exp(-1 / 4)]])


def test_rank_to_mos_ties_take_first_rank():
    got = prpo.rank_to_mos(np.array([[3.0, 3.0, 5.0]]), np.array([4.0]), W)
    np.testing.assert_allclose(got, [[math.exp(-2 / 4), math.exp(-2 / 4), math.exp(-1 / 4)]])


# ----------------------------------------------------------------------------- preference branch


def test_pairwise_right_and_wrong_order():
    right = prpo.pairwise_score_rank(np.array([[4.0], [2.0]]), np.array([4.5, 1.5]))
    np.testing.assert_allclose(right, [[math.sqrt(0.75)], [math.sqrt(0.75)]])
    wrong = prpo.pairwise_score_rank(np.array([[2.0], [4.0]]), np.array([4.5, 1.5]))
    np.testing.assert_allclose(wrong, [[math.sqrt(1 - 3 / 8)], [math.sqrt(1 - 3 / 8)]])


def test_pairwise_maps_ranks_back_to_answers():
    got = prpo.pairwise_score_rank(np.array([[4.0, 2.0], [1.0, 3.0]]), np.array([4.0, 2.0]))
    # Item 0: rank 0 is answer 1 (2 vs 1: m = 2/5), rank 1 is answer 0 (4 vs 3: m = 2/3).
    np.testing.assert_allclose(got[0], [math.sqrt(2 / 3), math.sqrt(2 / 5)])


def test_pairwise_equal_mos_edge_cases():
    exact = prpo.pairwise_score_rank(np.array([[3.0], [3.0]]), np.array([3.0, 3.0]))
    np.testing.assert_allclose(exact, [[1.0], [1.0]])  # 0/0 defined as 1
    off = prpo.pairwise_score_rank(np.array([[3.0], [4.0]]), np.array([3.0, 3.0]))
    np.testing.assert_allclose(off, [[1.0], [1.0]])  # g = 0.5 never equals p; m = 0
    assert prpo.pairwise_score_rank(np.array([[3.0, 4.0]]), np.array([3.0])).tolist() == [[0, 0]]


def test_triplet_ranking():
    mos = np.array([3.0, 2.0, 1.0])
    np.testing.assert_allclose(prpo.triplet_ranking(np.array([[3.0], [2.0], [1.0]]), mos), [[1], [1], [1]])
    np.testing.assert_allclose(prpo.triplet_ranking(np.array([[1.0], [2.0], [3.0]]), mos), [[0], [0], [0]])
    np.testing.assert_allclose(prpo.triplet_ranking(np.array([[3.0], [1.0], [2.0]]), mos), [[2 / 3]] * 3)


def test_triplet_ranking_fewer_than_three_items_is_zero():
    assert prpo.triplet_ranking(np.array([[3.0], [1.0]]), np.array([1.0, 2.0])).tolist() == [[0], [0]]


# ----------------------------------------------------------------------------- literal transcription


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_terms_match_the_formulas(seed):
    rng = np.random.default_rng(seed)
    # Two decimals make ties common, as in real answers.
    s = rng.uniform(1, 5, size=(5, 4)).round(1)
    y = rng.choice([1.5, 2.0, 3.0, 4.2], size=5)
    np.testing.assert_allclose(prpo.pairwise_score_rank(s, y), literal_pairwise(s, y))
    np.testing.assert_allclose(prpo.triplet_ranking(s, y), literal_triplet_ranking(s, y))


def test_combination_iqa_and_vqa():
    rng = np.random.default_rng(3)
    vectors = rng.uniform(1, 5, size=(4, 6, 5)).round(2)
    mos = np.array([1.2, 2.5, 3.7, 4.9])
    parts = prpo.reward_components(vectors, mos, "iqa", W)
    core = 0.375 * parts["pairwise"] - parts["std_penalty"] + 0.25 * parts["triplet_balance"]
    core += 0.125 * parts["triplet_ranking"]
    np.testing.assert_allclose(parts["accuracy"], (core + parts["rank_to_mos"]) / 3)
    np.testing.assert_allclose(parts["accuracy"], (parts["response"] + parts["preference"]) / 3)
    video = prpo.reward_components(vectors[..., :2], mos, "vqa", W)
    assert "rank_to_mos" not in video
    np.testing.assert_allclose(video["accuracy"], video["response"] + video["preference"])


def test_preference_scope_global_versus_chunks():
    rng = np.random.default_rng(4)
    vectors = rng.uniform(1, 5, size=(6, 3, 5))
    mos = rng.uniform(1, 5, size=6)
    chunked = prpo.reward_components(vectors, mos, "iqa", W, preference_group=3)
    first_half = prpo.reward_components(vectors[:3], mos[:3], "iqa", W)
    np.testing.assert_allclose(chunked["pairwise"][:3], first_half["pairwise"])
    whole = prpo.reward_components(vectors, mos, "iqa", W)
    assert not np.allclose(whole["pairwise"], chunked["pairwise"])


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\[B, K, 5\]"):
        prpo.reward_components(np.zeros((2, 3, 2)), np.zeros(2), "iqa", W)
    with pytest.raises(ValueError, match="mos"):
        prpo.reward_components(np.zeros((2, 3, 5)), np.zeros(3), "iqa", W)


def test_a_constant_answer_earns_less_preference_than_the_right_order():
    mos = np.array([1.5, 2.5, 3.5, 4.5])
    constant = np.full((4, 6, 2), 3.0)
    ordered = np.repeat(mos[:, None, None], 6, axis=1).repeat(2, axis=2) + 0.1
    assert prpo.reward_components(ordered, mos, "vqa", W)["preference"].mean() > (
        prpo.reward_components(constant, mos, "vqa", W)["preference"].mean() + 0.1
    )


def test_every_wording_of_the_question_asks_for_the_same_answer():
    for task, wordings in answer_format.QUESTIONS.items():
        assert answer_format.question_for(task) == wordings[0] and len(set(wordings)) == len(wordings) >= 3
        parts = answer_format.IQA_ASPECTS if task == "iqa" else answer_format.VQA_SCORES
        for text in wordings:
            for piece in ("between 1 and 5", "two decimals", "<think></think>", "<answer></answer>", "one per line"):
                assert piece in text, (task, piece, text)
            where = [text.find(part) for part in parts]
            assert -1 not in where and where == sorted(where), (task, text)  # every part, in the answer's order
    picks = [answer_format.wording_for(f"d:{i}", 7, "iqa") for i in range(200)]
    assert picks == [answer_format.wording_for(f"d:{i}", 7, "iqa") for i in range(200)]
    assert set(picks) == set(range(len(answer_format.QUESTIONS["iqa"])))
    assert picks != [answer_format.wording_for(f"d:{i}", 8, "iqa") for i in range(200)]


def test_preferences_within_each_dataset_ignore_the_other_datasets_items():
    texts = [[answer_format.format_answer("x", [s + k / 2] * 5) for k in range(3)] for s in (1.0, 2.0, 4.0, 3.0)]
    mos = [1.5, 2.5, 4.5, 2.0]
    apart = RewardWorker(reward_section(preference_scope="dataset"))
    mixed = apart.score(texts, mos, ["iqa"] * 4, datasets=["a", "a", "b", "b"])
    alone = apart.score(texts[:2], mos[:2], ["iqa"] * 2, datasets=["a", "a"])
    assert np.allclose(mixed.terms["total"][:2], alone.terms["total"])
    together = RewardWorker(reward_section()).score(texts, mos, ["iqa"] * 4, datasets=["a", "a", "b", "b"])
    assert not np.allclose(together.terms["total"][:2], alone.terms["total"])
