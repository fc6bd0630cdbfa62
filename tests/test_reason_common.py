"""The equation reader behind RFT's calculation check and its distinct-path key."""

from __future__ import annotations

import pytest

from synthaug.steps.reason.common import equations
from synthaug.steps.reason.rft import calculation_errors


@pytest.mark.parametrize(("text", "expected"), [
    ("Apples in boxes = 4 + 4 + 4 = 12.", ("4+4+4=12",)),
    ("Left = 50 - 20 = 30.", ("50-20=30",)),
    ("Change = $50 - $27 = $23.", ("50-27=23",)),
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.", ("9*2=18",)),
    ("So 3 + 4 = 7. 10 / 3 = 3.33 and 5 x 8 = 40.", ("3+4=7", "10/3=3.33", "5*8=40")),
    ("3 + 4 = 7 + 2 = 9", ("3+4=7", "7+2=9")),
    ("Total 1,000 + 2,500 = 3,500 dollars", ("1000+2500=3500",)),
    ("(3 + 4) * 2 = 14.", ("(3+4)*2=14",)),
    ("x = 5, and in 2023 she was 30 = 30", ()),
])
def test_equations_are_read_whatever_names_the_result(text: str, expected: tuple[str, ...]) \
        -> None:
    assert equations(text) == expected


def test_named_results_are_judged_by_their_arithmetic() -> None:
    assert calculation_errors("Apples in boxes = 4 + 4 + 4 = 12.") == []
    assert calculation_errors("Boxed = 3 * 4 = 13.") == ["3*4=13"]
    assert calculation_errors("So x = 12 - 5 = 7.\nChange = $50 - $27 = $23.") == []
    # two paths written in this style with different arithmetic are different paths
    assert equations("Boxes = 3 * 4 = 12.") != equations("Boxes = 6 + 6 = 12.")
    assert equations("Boxes = 3 * 4 = 12.")
