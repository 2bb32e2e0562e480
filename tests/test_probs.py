"""Per-option probability helpers (agent.core.probs) against hand-computed values."""

from __future__ import annotations

import math

import pytest

from agent.core.probs import chosen_letter, logsumexp, one_hot, softmax_over_letters, uniform


def test_softmax_over_letters() -> None:
    # e^0 : e^ln3 = 1 : 3; -inf gets exactly 0
    got = softmax_over_letters({"a": 0.0, "b": math.log(3.0), "c": -math.inf})
    assert got == pytest.approx({"a": 0.25, "b": 0.75, "c": 0.0}) and got["c"] == 0.0
    assert softmax_over_letters({"a": -math.inf, "b": -math.inf}) == {"a": 0.5, "b": 0.5}  # nothing known
    assert softmax_over_letters({"a": 1000.0, "b": 1000.0}) == {"a": 0.5, "b": 0.5}  # no overflow


def test_uniform_and_one_hot() -> None:
    assert uniform("abcd") == {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
    assert one_hot("b", ["a", "b", "c"]) == {"a": 0.0, "b": 1.0, "c": 0.0}


def test_logsumexp_is_stable() -> None:
    assert logsumexp([1000.0, 1000.0]) == pytest.approx(1000.0 + math.log(2.0))
    assert logsumexp([-math.inf]) == -math.inf


def test_chosen_letter_accepts_a_string_of_letters() -> None:
    assert chosen_letter({"a": 0.3, "b": 0.3, "c": 0.4}, "abc") == "c"
    assert chosen_letter({}, "ab") == "a"
