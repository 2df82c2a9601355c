"""GSM8K scoring as lm-evaluation-harness's gsm8k task: strict and flexible match on hand-written text."""

from __future__ import annotations

import pytest

from lit_lora.metrics.gsm8k import (
    exact_match,
    flexible_answer,
    flexible_match,
    normalise,
    strict_answer,
    strict_match,
)

# A correct answer, then a made-up next question with its own worked answer and "####".
RAMBLING = "16 - 3 - 4 = <<16-3-4=9>>9\n#### 18\n\nQuestion: Tom has 2 apples.\nAnswer: 2 + 2 = 4\n#### 4"


@pytest.mark.parametrize(
    ("generation", "strict", "flexible"),
    [
        (RAMBLING, "18", "4"),  # strict: the first "####"; flexible: the last number
        ("first #### 3 then #### 4", "3", "4"),
        ("#### 7 and then 9", "7", "9"),
        ("#### 1,000,000", "1,000,000", "1,000,000"),
        ("It costs $1,234.50.", None, "$1,234.50."),  # no "####"; the "." after the number is kept
        ("#### $5", None, "$5"),  # strict takes no "$"
        ("#### -5", "-5", "-5"),
        ("The answer is -$5.", None, "-$5."),
        ("10-3 = 7", None, "7"),
        ("5-3", None, "-3"),  # as the harness: the minus of a subtraction reads as a sign
        ("####5", None, "5"),  # strict needs "#### " with its space
        ("Wait...", None, "..."),  # as the harness: a run of dots is a flexible "number"
        ("a 7 b", None, "7"),  # a single digit: the pattern's second alternative
        ("no number here", None, None),
        ("#### ", None, None),
    ],
)
def test_strict_and_flexible_extraction(generation: str, strict: str | None, flexible: str | None) -> None:
    assert strict_answer(generation) == strict
    assert flexible_answer(generation) == flexible


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs, $18 a day.\n#### 1,018", "1018"),  # a reference
        ("$1,234.50.", "1234.50"),  # one trailing "." removed; "50" stays: strings, not values
        ("18..", "18."),
        ("-$5", "-5"),
        ("ABC", "abc"),
    ],
)
def test_normalise_is_the_harness_regexes_to_ignore(text: str, normalised: str) -> None:
    assert normalise(text) == normalised


@pytest.mark.parametrize(
    ("generation", "reference", "strict", "flexible"),
    [
        (RAMBLING, "18", True, False),  # the answer counts, not the made-up question's
        ("so she pays $18.\n#### 18", "18", True, True),
        ("#### 1,234", "1234", True, True),  # commas removed on both sides
        ("It is $1,234.", "1,234", False, True),  # "$" and the sentence's "." removed
        ("#### -3", "-3", True, True),
        ("#### 3", "-3", False, False),
        ("#### 3.50", "3.5", False, False),  # compared as strings, as the harness does
        ("#### 18.0", "18", False, False),
        ("#### 18.", "18", True, True),  # one trailing "." is dropped
        ("I do not know", "0", False, False),
    ],
)
def test_match_against_the_reference(generation: str, reference: str, strict: bool, flexible: bool) -> None:
    assert strict_match(generation, reference) is strict
    assert flexible_match(generation, reference) is flexible


def test_exact_match_is_the_fraction_correct() -> None:
    generations = [RAMBLING, "It is 4.", "#### 7 or 8", "none"]
    references = ["18", "4", "8", "1"]
    assert exact_match(generations, references) == pytest.approx(1 / 4)  # RAMBLING
    assert exact_match(generations, references, flexible=True) == pytest.approx(2 / 4)  # 4., 8
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError):
        exact_match(["1"], [])
