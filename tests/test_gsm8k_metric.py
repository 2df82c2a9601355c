"""GSM8K answer extraction on tricky strings, and exact match by value."""

from __future__ import annotations

import pytest

from lit_lora.metrics.gsm8k import exact_match, extract_answer, is_correct


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 18", "18"),  # the marker wins over later text
        ("#### 7 and then 9", "7"),
        ("first #### 3 then #### 4", "4"),  # the last marker
        ("She makes $18 every day.", "18"),  # currency, trailing period
        ("The total is 1,234 apples", "1234"),
        ("#### 1,000,000", "1000000"),
        ("It costs $1,234.50.", "1234.5"),
        ("It costs 3.50 dollars", "3.5"),
        ("The answer is -$5.", "-5"),
        ("The answer is $-5", "-5"),
        ("Temperature: −3 degrees", "-3"),  # a Unicode minus
        ("x = -3", "-3"),
        ("10-3 = 7", "7"),
        ("5-3", "3"),  # subtraction, not a negative number
        ("costs - 4 dollars", "4"),  # a dash apart from the number is not its sign
        ("the lists 3,4,5", "5"),  # commas not in groups of three separate numbers
        ("It is .5 kg", "0.5"),
        ("-0.00", "0"),
        ("about 12.0% of it", "12"),
        ("100 people", "100"),  # not 1E+2
        ("no number here", None),
        ("#### ", None),
    ],
)
def test_extract_answer(text, number):
    assert extract_answer(text) == number


def test_is_correct_compares_values_not_strings():
    assert is_correct("so she pays $3.50.", "#### 3.5")
    assert is_correct("The answer is 1,000", "1000")
    assert not is_correct("The answer is 100", "1000")
    assert not is_correct("I do not know", "0")


def test_exact_match_is_the_fraction_correct():
    generations = ["#### 18", "It is 4.", "about 7 or 8", "none"]
    assert exact_match(generations, ["18", "4.0", "7", "1"]) == pytest.approx(0.5)
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError):
        exact_match(["1"], [])
