"""GSM8K scoring as lm-evaluation-harness's ``gsm8k`` task scores it: strict match and flexible extract.

strict (logged as ``exact_match``): the number after the *first* ``#### `` in the generation, as the
harness's ``strict-match`` filter finds it (``#### `` with one space, an optional ``-``, then digits, ``.``
and ``,``). A model that answers and then makes up a next question with its own ``####`` is scored on
its answer. No ``#### <number>``: wrong.

flexible (logged as ``exact_match_flexible``): the *last* number-like run in the generation, as the
harness's ``flexible-extract`` filter finds it: two or more of digits, ``$``, ``.`` and ``,`` (after an
optional ``-``), or else a lone digit with an optional ``-``. So ``10-3`` ends in ``-3``, and, as in the
harness, a run such as ``...`` counts as a "number" too (it never equals a reference).

Both are compared with the reference as strings after the harness's normalisation, applied to both
sides: commas and ``$`` removed, everything up to the last ``#### `` removed, one trailing ``.``
removed, case folded. So ``1,234`` equals ``1234``, ``$18.`` equals ``18`` (flexible; strict allows no
``$``), ``-5`` equals ``-5``, but ``3.50`` is not ``3.5`` and ``18.0`` is not ``18``: the harness compares
strings, not values, and so does lit_lora, so that the numbers are comparable with the harness's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

STRICT = re.compile(r"#### (-?[0-9.,]+)")
FLEXIBLE = re.compile(r"-?[$0-9.,]{2,}|-?[0-9]+")
# The harness's regexes_to_ignore for gsm8k's exact_match, removed in this order from both sides.
_IGNORED = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))


def normalise(text: str) -> str:
    """``text`` as the harness compares it: ``,`` and ``$`` gone, up to the last ``#### `` gone, one
    trailing ``.`` gone, lower case. A GSM8K reference (worked solution + ``#### 18``) becomes ``18``."""
    for pattern in _IGNORED:
        text = pattern.sub("", text)
    return text.lower()


def strict_answer(generation: str) -> str | None:
    """The number after the first ``#### `` (as written, e.g. ``1,234``), or None when there is none."""
    match = STRICT.search(generation)
    return match.group(1).strip() if match else None


def flexible_answer(generation: str) -> str | None:
    """The last number-like run in the generation (as written, e.g. ``$1,234.``), or None."""
    matches = FLEXIBLE.findall(generation)
    return matches[-1].strip() if matches else None


def _matches(answer: str | None, reference: str) -> bool:
    return answer is not None and normalise(answer) == normalise(reference)


def strict_match(generation: str, reference: str) -> bool:
    """Whether the first ``#### <number>`` of ``generation`` equals ``reference`` (harness strict-match)."""
    return _matches(strict_answer(generation), reference)


def flexible_match(generation: str, reference: str) -> bool:
    """Whether the last number in ``generation`` equals ``reference`` (harness flexible-extract)."""
    return _matches(flexible_answer(generation), reference)


def exact_match(generations: Sequence[str], references: Sequence[str], flexible: bool = False) -> float:
    """Fraction of generations that match their reference (strict, or flexible); 0.0 for no pairs."""
    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations for {len(references)} references")
    if not references:
        return 0.0
    match = flexible_match if flexible else strict_match
    return sum(match(g, r) for g, r in zip(generations, references, strict=True)) / len(references)
