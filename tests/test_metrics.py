"""Metrics against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from eval.metrics import (
    accuracy,
    apply_temperature,
    chosen_letter,
    circular_accuracy,
    expected_calibration_error,
    fit_temperature,
    mcnemar_exact,
    nll,
    paired_comparison,
    position_bias,
    wilson_interval,
)


@pytest.mark.parametrize(("correct", "expected"), [
    ([True, False, True, True], 0.75),
    ([False, False], 0.0),
    ([], 0.0),
])
def test_accuracy(correct: list[bool], expected: float) -> None:
    assert accuracy(correct) == expected


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    # p=0.8, z²=3.8414588: centre=(0.8+0.1920729)/1.3841459=0.7167402, half=1.4160097*sqrt(0.016+0.0096036)=0.2265777
    (8, 10, 0.490162, 0.943318),
    # p=0: centre=0.1920729/1.3841459=0.1387664, half=1.4160097*sqrt(0.0096036)=0.1387664: exactly 0 to 2*centre
    (0, 10, 0.0, 0.277533),
    # by symmetry with 0/10
    (10, 10, 0.722467, 1.0),
    # p=0.5, z²/n=0.0384146: centre=0.5, half=1.959964/1.0384146*sqrt(0.0025+0.0000960)=1.887458*0.0509513=0.096168
    (50, 100, 0.403832, 0.596168),
])
def test_wilson_interval(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-6)


def test_wilson_interval_without_questions_says_nothing_is_known() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(3, 2)


@pytest.mark.parametrize(("b", "c", "p"), [
    (1, 6, 2 * (1 + 7) / 128),          # n=7: P(X<=1) = (C(7,0)+C(7,1))/2^7
    (0, 5, 2 / 32),                     # n=5: P(X<=0) = 1/32
    (2, 10, 2 * (1 + 12 + 66) / 4096),  # n=12: (C(12,0)+C(12,1)+C(12,2))/2^12 = 79/4096
    (3, 3, 1.0),                        # 2 * 42/64 > 1, capped
    (0, 0, 1.0),                        # no discordant pairs: no evidence of a difference
    (6, 1, 2 * (1 + 7) / 128),          # symmetric
])
def test_mcnemar_exact(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-12)


def test_paired_comparison_counts_discordant_pairs() -> None:
    a = [True, True, False, False, True]
    b = [True, False, True, False, False]
    # only a right: questions 2 and 5; only b right: question 3; p = 2 * P(X<=1 | n=3) = 2 * 4/8 = 1
    assert paired_comparison(a, b) == (2, 1, 1.0)
    with pytest.raises(ValueError, match="same questions"):
        paired_comparison([True], [True, False])


def test_circular_accuracy_counts_a_question_only_if_every_rotation_is_right() -> None:
    assert circular_accuracy([[True, True, True], [True, False, True], [True, True], []]) == 0.5


def test_position_bias() -> None:
    got = position_bias(["a", "a", "b", "a"], ["a", "b", "b", "c"], "abc")
    assert got == {"a": {"chosen": 0.75, "correct": 0.25, "gap": 0.5},
                   "b": {"chosen": 0.25, "correct": 0.5, "gap": -0.25},
                   "c": {"chosen": 0.0, "correct": 0.25, "gap": -0.25}}


@pytest.mark.parametrize(("conf", "correct", "ece"), [
    # one per bin: (|1-.95| + |0-.85| + |1-.65| + |1-.55|) / 4 = 1.7 / 4
    ([0.95, 0.85, 0.65, 0.55], [True, False, True, True], 0.425),
    # bin (0.7, 0.8]: acc 0.5, conf 0.75 -> 2/3 * 0.25; bin (0.2, 0.3]: acc 0, conf 0.25 -> 1/3 * 0.25
    ([0.72, 0.78, 0.25], [True, False, False], 0.25),
    # 1.0 goes to the last bin (error 0), 0.5 to (0.4, 0.5] (error 0.5), each half the weight
    ([1.0, 0.5], [True, False], 0.25),
    # 0.0 goes to the first bin: accuracy 0, confidence 0
    ([0.0], [False], 0.0),
    ([], [], 0.0),
])
def test_expected_calibration_error(conf: list[float], correct: list[bool], ece: float) -> None:
    assert expected_calibration_error(conf, correct) == pytest.approx(ece, abs=1e-12)


def test_ece_refuses_probabilities_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [True])


def test_temperature_scales_log_probabilities() -> None:
    # softmax(log p / 2) = sqrt(p) normalised: sqrt(.8) : sqrt(.2) = 2 : 1
    assert apply_temperature({"a": 0.8, "b": 0.2}, 2.0) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    # T = 1/2 squares: .64 : .04
    assert apply_temperature({"a": 0.8, "b": 0.2}, 0.5) == pytest.approx({"a": 0.64 / 0.68, "b": 0.04 / 0.68})
    assert apply_temperature({"a": 1.0, "b": 0.0}, 3.0) == {"a": 1.0, "b": 0.0}  # one-hot stays one-hot
    with pytest.raises(ValueError, match="positive"):
        apply_temperature({"a": 1.0}, 0.0)


def test_nll() -> None:
    assert nll([{"a": 0.5, "b": 0.5}], ["a"]) == pytest.approx(math.log(2))
    # (-ln .8 - ln .2) / 2
    assert nll([{"a": 0.8, "b": 0.2}, {"a": 0.8, "b": 0.2}], ["a", "b"]) == pytest.approx(
        (-math.log(0.8) - math.log(0.2)) / 2)


def test_fit_temperature_recovers_the_calibrating_temperature() -> None:
    # Every row says 0.9 vs 0.1 (logit gap ln 9) but only 3 of 4 are right: the calibrated probability is 3/4,
    # a logit gap of ln 3, so T = ln 9 / ln 3 = 2.
    probs = [{"a": 0.9, "b": 0.1}] * 4
    assert fit_temperature(probs, ["a", "a", "a", "b"]) == pytest.approx(2.0, abs=1e-4)
    # Right 9 times in 10 at 0.9: already calibrated, T = 1.
    assert fit_temperature([{"a": 0.9, "b": 0.1}] * 10, ["a"] * 9 + ["b"]) == pytest.approx(1.0, abs=1e-4)


def test_fit_temperature_without_information_is_one() -> None:
    assert fit_temperature([], []) == 1.0
    assert fit_temperature([{"a": 0.5, "b": 0.5}] * 3, ["a", "b", "a"]) == 1.0  # NLL does not depend on T


def test_chosen_letter_breaks_ties_towards_the_first_option() -> None:
    assert chosen_letter({"a": 0.4, "b": 0.4, "c": 0.2}, "abc") == "a"
    assert chosen_letter({"a": 0.2, "b": 0.4, "c": 0.4}, "abc") == "b"
