"""The math answer verifier: extraction, normalization and equivalence."""

from __future__ import annotations

import pytest

from synthaug.verify.answers import (
    Verdict,
    check,
    equivalent,
    extract_answer,
    gold_of,
    last_number,
    normalize,
)

GSM8K_SOLUTION = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
                  "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18")


# -- extraction --------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    (GSM8K_SOLUTION, "18"),
    ("First 3.\n#### 1,234\n", "1,234"),
    ("#### 5\nlater text\n#### 7", "7"),
    ("So the result is \\boxed{\\frac{\\sqrt{3}}{2}}.", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{1} is wrong, \\boxed{\\{1, \\{2\\}\\}} is right", "\\{1, \\{2\\}\\}"),
    ("Hence $\\fbox{x^{2}}$", "x^{2}"),
    ("4 + 4 = 8.\nThe answer is 8.", "8"),
    ("The answer is 8. Then the answer is $1,234.", "$1,234"),
    ("The final answer is 3.5 hours.", "3.5 hours"),
    ("Answer: -12", "-12"),
    ("the answer is: \\frac{1}{2}\n", "\\frac{1}{2}"),
])
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_hashes_take_precedence_over_boxed_and_prose() -> None:
    text = "The answer is 3. \\boxed{4}\n#### 5"
    assert extract_answer(text) == "5"
    assert extract_answer("The answer is 3. So \\boxed{4}") == "4"


@pytest.mark.parametrize("text", [
    "Let x be the number of apples; then 2x = 10.",
    "\\boxed{unbalanced",
    "",
])
def test_no_answer(text: str) -> None:
    assert extract_answer(text) is None
    verdict = check(text, "5")
    assert verdict == Verdict(False, None, "5", "no answer found")


def test_gold_of() -> None:
    assert gold_of(GSM8K_SOLUTION) == "18"
    assert gold_of("We get \\boxed{\\frac{1}{4}}.") == "\\frac{1}{4}"
    assert gold_of(" 42 ") == "42"


# -- normalization -------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("$1,234.", "1,234"),
    ("\\$12", "12"),
    ("-$5", "-5"),
    ("$-5", "-5"),
    ("12 cm", "12"),
    ("5 apples.", "5"),
    ("50%", "50"),
    ("50\\%", "50"),
    ("\u22127", "-7"),
    ("$\\frac{1}{2}$", "\\frac{1}{2}"),
    ("2 x", "2 x"),
    ("3 pi", "3 pi"),
])
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


# -- equivalence ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("predicted", "gold"), [
    ("1,234", "1234"),
    ("$1,234", "1234"),
    ("1,000,000", "1000000"),
    ("$18.00", "18"),
    ("10.0", "10"),
    ("12 dollars", "12"),
    ("3.5 hours", "3.5"),
    ("-5", "-5"),
    ("-$5", "-5"),
    ("50%", "50"),
    ("0.5", "1/2"),
    ("3.5", "7/2"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{3}{4}", "0.75"),
    ("\\frac{2}{4}", "\\frac{1}{2}"),
    ("\\frac{3}{2}", "1.5"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\sqrt{12}", "2\\sqrt{3}"),
    ("\\pi/2", "\\frac{\\pi}{2}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("x=3", "3"),
    ("\\{1,2,3\\}", "\\{3,2,1\\}"),
    ("(1, 2]", "(1,2]"),
    ("(-\\infty, 3)", "(-\\infty,3)"),
    ("[0, 1]", "[0,1]"),
])
def test_equivalent(predicted: str, gold: str) -> None:
    assert equivalent(predicted, gold)
    assert equivalent(gold, predicted)


@pytest.mark.parametrize(("predicted", "gold"), [
    ("5", "-5"),
    ("19", "18"),
    ("1800", "18"),
    ("0.18", "18"),
    ("1,2", "12"),  # a pair, not twelve
    ("0.333", "1/3"),  # a rounded decimal is not the exact fraction
    ("1.5", "\\frac{2}{3}"),
    ("50%", "0.5"),  # percent signs are dropped (GSM8K's convention), not divided out
    ("\\sqrt{12}", "3\\sqrt{2}"),
    ("\\sqrt{2}", "1.414"),
    ("x^2", "x^3"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("(1,2]", "[1,2]"),
    ("(1,2)", "[1,2]"),
    ("2 x", "2"),
    ("", "5"),
])
def test_not_equivalent(predicted: str, gold: str) -> None:
    assert not equivalent(predicted, gold)
    assert not equivalent(gold, predicted)


# -- the whole check -------------------------------------------------------------------------------
def test_check_accepts_a_gsm8k_reference_against_itself() -> None:
    verdict = check(GSM8K_SOLUTION, GSM8K_SOLUTION)
    assert verdict.correct and verdict.predicted == "18" and verdict.gold == "18"
    assert verdict.reason == "match"


def test_check_a_cot_solution_against_a_gsm8k_gold() -> None:
    right = "9 eggs a day at $2 each.\nThe answer is $18."
    wrong = "9 eggs a day at $2 each.\nThe answer is $19."
    assert check(right, GSM8K_SOLUTION).correct
    verdict = check(wrong, GSM8K_SOLUTION)
    assert verdict == Verdict(False, "$19", "18", "mismatch")


def test_check_boxed_latex_against_boxed_gold() -> None:
    assert check("so $x = \\boxed{\\frac{\\sqrt{2}}{2}}$", "\\boxed{\\frac{1}{\\sqrt{2}}}").correct
    assert not check("so $x = \\boxed{\\frac{\\sqrt{3}}{2}}$",
                     "\\boxed{\\frac{1}{\\sqrt{2}}}").correct


def test_verdict_as_meta() -> None:
    meta = check("The answer is 4.", "4").as_meta()
    assert meta == {"verifier": "math", "correct": True, "predicted": "4", "gold": "4",
                    "reason": "match"}


def test_last_number() -> None:
    assert last_number("He paid $1,200 for 3 items") == "3"
    assert last_number("total: 1,200") == "1200"
    assert last_number("no digits") is None
