"""problem-variants (TinyGSM): answers come from running programs, never from the seed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from synthaug import benchmarks
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl
from tests.recipe_helpers import prompt_of, run_recipe

TRAIN = {"question": "A train travels 85 miles each hour. How far does it travel in 6 hours?",
         "answer": "510"}
TRAIN_PROGRAM = ('def simple_math_problem() -> float:\n    """A train travels 85 miles each '
                 'hour. How far does it travel in 6 hours?"""\n    speed = 85\n    hours = 6\n'
                 '    result = speed * hours\n    return result')
NUMERIC = {"variants": {"modes": ["numeric"], "numeric": 4}}
MODEL = {"variants": {"modes": ["model"]}}


def fenced(question: str, body: str) -> str:
    return f'```python\ndef simple_math_problem() -> float:\n    """{question}"""\n{body}\n```'


def dropped(tmp: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp / "out" / "dropped.jsonl")


def outputs(tmp: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp / "out" / "records.jsonl")


def test_numeric_variants_get_answers_recomputed_from_the_seed_program(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        run_recipe("problem-variants", server, tmp_path,
                   [{**TRAIN, "program": TRAIN_PROGRAM}], sets=NUMERIC)
    made = outputs(tmp_path)
    assert made, dropped(tmp_path)
    for record in made:
        speed, hours = map(int, re.findall(r"\d+", record["question"]))
        assert record["answer"] == str(speed * hours)  # what the changed numbers give
        assert record["question"] != TRAIN["question"]
        assert record["variant_kind"] == "numeric"
        assert record["seed_question"] == TRAIN["question"]
        assert f"speed = {speed}" in record["program"]
        assert record["question"] in record["program"]  # the docstring is the new problem
    assert any(r["answer"] != "510" for r in made)


def test_names_are_swapped_within_their_list_and_the_program_follows(tmp_path: Path) -> None:
    program = ("def simple_math_problem():\n    boxes = 4\n    pens = 15\n"
               "    owner = 'Omar'\n    return boxes * pens")
    seed = {"question": "Omar has 4 boxes of 15 pens. How many pens does Omar have?",
            "answer": "60", "program": program}
    with FakeOpenAIServer() as server:
        run_recipe("problem-variants", server, tmp_path, [seed], sets=NUMERIC)
    made = outputs(tmp_path)
    assert made
    for record in made:
        assert "Omar" not in record["question"]
        name = record["question"].split()[0]
        assert record["question"].count(name) == 2
        assert record["_meta"]["verifier"]["changed"]["Omar"] == name
        assert f"owner = '{name}'" in record["program"] and "Omar" not in record["program"]


def test_a_seed_program_that_misses_the_gold_answer_makes_no_numeric_variants(
        tmp_path: Path) -> None:
    wrong = fenced(TRAIN["question"], "    speed = 85\n    hours = 6\n    return speed + hours")
    with FakeOpenAIServer(lambda body: Reply(text=wrong)) as server:
        run_recipe("problem-variants", server, tmp_path, [TRAIN], sets=NUMERIC)
    assert outputs(tmp_path) == []
    rows = dropped(tmp_path)
    assert [r["reason"] for r in rows] == ["no numeric variants"]
    assert rows[0]["detail"] == "seed program returns 91, not 510"


def test_a_model_written_seed_program_that_returns_the_gold_is_varied(tmp_path: Path) -> None:
    right = fenced(TRAIN["question"], "    speed = 85\n    hours = 6\n    return speed * hours")
    with FakeOpenAIServer(lambda body: Reply(text=right)) as server:
        run_recipe("problem-variants", server, tmp_path, [TRAIN], sets=NUMERIC)
    assert outputs(tmp_path) and all(r["variant_kind"] == "numeric" for r in outputs(tmp_path))


MODEL_REPLY = "\n\n".join([
    "Here are new problems.",
    fenced("Ana packs 7 bags with 8 apples each. How many apples does she pack?",
           "    bags = 7\n    per_bag = 8\n    result = bags * per_bag  # the answer is 99\n"
           "    return result"),
    fenced(TRAIN["question"], "    return 85 * 6"),
    fenced("Ben splits 10 cards among 0 friends. How many does each get?",
           "    return 10 / 0"),
    fenced("Cal has some marbles. What colour are they?", "    return 'blue'"),
    fenced("Dee shares 5 pies among 2 kids. How much pie does each kid get?",
           "    return 5 / 2"),
    fenced("Eli owes 3 dollars and has 10. What is his balance after paying 20?",
           "    return 10 - 20"),
    fenced("Ana packs 7 bags with 8 apples each.  How many apples does she pack?",
           "    return 7 * 8"),
])


def test_model_variants_keep_only_programs_that_compute_a_plausible_answer(
        tmp_path: Path) -> None:
    with FakeOpenAIServer(lambda body: Reply(text=MODEL_REPLY)) as server:
        run_recipe("problem-variants", server, tmp_path, [TRAIN], sets=MODEL)
    made = outputs(tmp_path)
    assert [(r["question"], r["answer"]) for r in made] == [
        ("Ana packs 7 bags with 8 apples each. How many apples does she pack?", "56")]
    assert made[0]["_meta"]["verifier"]["verifier"] == "sandbox"
    assert made[0]["messages"][1]["content"].startswith("```python\ndef simple_math_problem")
    reasons = sorted(r["reason"] for r in dropped(tmp_path))
    assert reasons == sorted(["identical to the seed", "program error", "non-numeric answer",
                              "fractional answer", "negative answer", "duplicate variant"])


def test_the_variant_request_shows_the_seed_and_asks_for_solution_functions(
        tmp_path: Path) -> None:
    asked: list[str] = []

    def answer(body: dict[str, Any]) -> Reply:
        asked.append(prompt_of(body))
        return Reply(text=MODEL_REPLY)

    with FakeOpenAIServer(answer) as server:
        run_recipe("problem-variants", server, tmp_path, [TRAIN],
                   sets={"variants": {"modes": ["model"], "variants": 10}})
    assert len(asked) == 1
    assert TRAIN["question"] in asked[0] and "10 new problems" in asked[0]
    assert "def simple_math_problem()" in asked[0] and TRAIN["answer"] not in asked[0]


def test_variants_overlapping_gsm8k_test_are_dropped(tmp_path: Path) -> None:
    leaked = benchmarks.gsm8k()[0].text.split("\n")[0]
    reply = "\n".join([fenced(leaked, "    return (16 - 3 - 4) * 2"),
                       fenced("Ana packs 7 bags with 8 apples each. How many apples?",
                              "    return 7 * 8")])
    with FakeOpenAIServer(lambda body: Reply(text=reply)) as server:
        run_recipe("problem-variants", server, tmp_path, [TRAIN], sets=MODEL)
    assert [r["answer"] for r in outputs(tmp_path)] == ["56"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sum(manifest["steps"]["decontaminate"]["dropped"].values()) == 1


def test_draws_that_give_implausible_answers_are_replaced(tmp_path: Path) -> None:
    program = ("def simple_math_problem():\n    per_day = 12\n    pages = 180\n    read = 60\n"
               "    return (pages - read) / per_day")
    seed = {"question": "Lena reads 12 pages a day. Her book has 180 pages and she has read 60 "
                        "pages. How many more days does she need?", "answer": "10",
            "program": program}
    with FakeOpenAIServer() as server:
        run_recipe("problem-variants", server, tmp_path, [seed],
                   sets={"variants": {"modes": ["numeric"], "numeric": 2, "draws": 15}})
    made = outputs(tmp_path)
    assert len(made) == 2
    for record in made:
        per_day, pages, read = map(int, re.findall(r"\d+", record["question"]))
        assert (pages - read) % per_day == 0 and record["answer"] == str((pages - read) // per_day)
    reasons = {r["reason"] for r in dropped(tmp_path)}
    assert "fractional answer" in reasons  # the draws it replaced


SALE = "A shirt costs 100 dollars and is on sale for 20 percent off. What is the sale price?"
SALE_PROGRAM = (f'def simple_math_problem() -> float:\n    """{SALE}"""\n    price = 100\n'
                '    discount = 20\n    result = price - price * discount / 100\n    return result')


def test_a_hidden_constant_equal_to_a_question_number_keeps_its_value() -> None:
    import random

    from synthaug.steps.augment.variants import numeric_variant

    for seed in range(6):
        made = numeric_variant(SALE, SALE_PROGRAM, random.Random(seed), rename=True)
        assert made is not None
        assert "/ 100" in made.program  # the percent's /100 is not a quantity of the problem
        assert "100" not in made.changed  # so 100, a literal elsewhere too, keeps its value
        price, discount = map(float, re.findall(r"\d+", made.question)[:2])
        assert discount != 20 and made.changed == {"20": str(int(discount))}
        space: dict[str, Any] = {}
        exec(made.program, space)
        assert space["simple_math_problem"]() == price - price * discount / 100
