"""GSM8K answer extraction and exact match: the number after the last ``####``, else the last number.

Numbers are compared by value: ``1,234`` is 1234, ``3.50`` equals ``3.5``, ``$5``, ``-$5`` and ``$-5``
are 5, -5 and -5, and a sentence's trailing period (``is 18.``) is not a decimal point. A minus counts as
a sign only when it touches the number and follows no digit or letter (``10-3`` ends in 3), and
thousands separators only in groups of three digits (``3,4,5`` is a list whose last number is 5).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

MARKER = "####"
_NUMBER = re.compile(
    # A minus right after a digit, letter or bracket is subtraction (10-3), not a sign.
    r"(?:(?<![\w)\]])(?P<sign>[-+\u2212]))?(?:\$\s*(?P<sign2>[-+])?)?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)


def _canonical(match: re.Match[str]) -> str | None:
    negative = (match["sign"] in ("-", "\u2212")) != (match["sign2"] == "-")  # -$-5 is 5
    try:
        value = Decimal(match["digits"].replace(",", ""))
    except InvalidOperation:
        return None
    value = -value if negative else value
    if value == 0:
        value = Decimal(0)  # -0 and 0.00 are both 0
    return format(value.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """The answer as a canonical number string ("1234", "3.5", "-5"), or None when there is no number.

    After a ``####`` marker the first number following the last marker counts; without a marker the
    last number in the text does.
    """
    if MARKER in text:
        tail = text.rsplit(MARKER, 1)[1]
        match = _NUMBER.search(tail)
        if match is not None:
            return _canonical(match)
    matches = list(_NUMBER.finditer(text))
    return _canonical(matches[-1]) if matches else None


def is_correct(generation: str, reference: str) -> bool:
    """Whether the number extracted from ``generation`` equals the reference's by value."""
    predicted, gold = extract_answer(generation), extract_answer(reference)
    return predicted is not None and gold is not None and Decimal(predicted) == Decimal(gold)


def exact_match(generations: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of generations whose extracted number equals the reference's (0.0 for no pairs)."""
    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations for {len(references)} references")
    if not references:
        return 0.0
    return sum(is_correct(g, r) for g, r in zip(generations, references, strict=True)) / len(references)
