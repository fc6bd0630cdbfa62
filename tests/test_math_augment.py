"""MetaMath, MMIQC, LEMA and Math-Shepherd: each recipe's mechanism against scripted models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from synthaug.backends.base import Request
from synthaug.io import export
from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.shapes import to_alpaca, to_prm, to_sft
from synthaug.steps.reason.metamath import mask_number, split_asked, states
from synthaug.steps.reason.step_labels import PREFIX_HEAD
from synthaug.testing.fake import Script, text_of
from tests.conftest import read_jsonl, run, write_jsonl
from tests.recipe_helpers import a_context

MUFFINS = ("A bakery sells muffins for $3 each. On Monday it sold 45 muffins and on Tuesday "
           "38 muffins. How much money did it make over the two days?")
SAVINGS = "Priya saves $15 every week. After how many weeks will she have saved $240?"
PROBLEMS = [{"question": MUFFINS, "answer": "249"}, {"question": SAVINGS, "answer": "16"}]
_NUM = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def recipe(name: str, sets: dict[str, Any], **roles: Script) -> Pipeline:
    """A built-in recipe with its steps' options overridden and its roles answered by scripts."""
    found, source = resolve_recipe(name)
    found.backends = {role: script.spec() for role, script in roles.items()}
    for step in found.steps:
        step.with_.update(sets)
    return Pipeline.from_recipe(found, source)


def outputs(tmp: Path, pipe: Pipeline, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    run(pipe, tmp / "out", write_jsonl(tmp / "in.jsonl", rows))
    return read_jsonl(tmp / "out" / "records.jsonl")


def dropped(tmp: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp / "out" / "dropped.jsonl")


def masked_value(original: str, masked: str) -> str:
    """The number of `original` that `masked` replaced by x (what a perfect solver finds)."""
    start = next(i for i, (a, b) in enumerate(zip(original, masked, strict=False)) if a != b)
    found = _NUM.match(original, start)
    assert found and masked[start] == "x", (original, masked)
    return found.group().replace(",", "")


# -- MetaMath -------------------------------------------------------------------------------

def metamath_model(request: Request) -> str | list[str]:
    """Rephrases, states answers, and solves: one right and one wrong answer per question.

    The wrong answer of a backward (SV, FOBAR) question is the forward answer: a step that
    verified backward answers against the original answer would keep it.
    """
    text = text_of(request)
    if text.endswith("Rephrased question:"):
        asked = text.rsplit("Question: ", 1)[1].split("\n")[0]
        return f"Put differently: {asked}"
    if text.endswith("Statement:"):
        answer = text.rsplit("Answer: ", 1)[1].split("\n")[0]
        return f"The result is {answer}.\n"
    original = next(p for p in PROBLEMS if p["question"].split(" ")[1] in text)
    gold = original["answer"]
    if "unknown variable x" in text:
        right = masked_value(original["question"], text)
        return [f"So x = {right}.\nThe answer is {right}.", f"The answer is {gold}."]
    return [f"Adding up gives {gold}.\nThe answer is {gold}.", f"The answer is {int(gold) + 1}."]


def test_metamath_keeps_only_verified_answers_each_mode_its_own_type(tmp_path: Path) -> None:
    script = Script(metamath_model)
    out = outputs(tmp_path, recipe("metamath", {"samples": 2}, default=script), PROBLEMS)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in out:
        by_type.setdefault(record["type"], []).append(record)
        assert record["_meta"]["verifier"]["correct"] is True
        assert record["_meta"]["verifier"]["gold"] == record["answer"]
        assert record["response"].endswith(f"The answer is {record['answer']}.")
    # one right answer of two per mode and question: every wrong one was dropped
    assert {t: len(rs) for t, rs in by_type.items()} == {
        "AnsAug": 2, "Rephrased": 2, "SV": 2, "FOBAR": 2}
    reasons = [row["reason"] for row in dropped(tmp_path)]
    assert sorted(reasons) == sorted(f"{m}: answer not verified" for m in
                                     ("AnsAug", "Rephrased", "SV", "FOBAR") for _ in PROBLEMS)
    for record in out:
        original, gold = record["original_question"], record["original_answer"]
        if record["type"] in ("AnsAug", "Rephrased"):
            assert record["answer"] == gold
        if record["type"] == "Rephrased":
            assert record["question"] == "Put differently: " + original
        if record["type"] in ("SV", "FOBAR"):
            value = record["masked_number"]
            assert record["answer"] == value and value != gold
        if record["type"] == "FOBAR":  # x stands where a number of the question was written
            masked = record["question"].split(" If we know")[0]
            assert masked.replace("x", value, 1) == original
            assert record["question"] == (f"{masked} If we know the answer to the above "
                                          f"question is {gold}, what is the value of unknown "
                                          f"variable x?")
        if record["type"] == "SV":  # the asking sentence became a statement of the answer
            body, asked = split_asked(original)
            masked = record["question"].split(" The result is")[0]
            assert masked.replace("x", value, 1) == body and asked not in record["question"]
            assert record["question"].endswith(
                f"The result is {gold}. What is the value of unknown variable x?")


def test_a_masked_number_is_one_written_in_the_question() -> None:
    rng = a_context().rng(None, "m")
    for _ in range(20):
        masked = mask_number("Tom has 3 bags of 12 apples and 3 pears.", rng)
        assert masked == ("Tom has 3 bags of x apples and 3 pears.", "12")  # 3 is written twice
    assert mask_number("No numbers here.", rng) is None
    text, value = mask_number("It costs $1,250.50 in total.", rng) or ("", "")
    assert (text, value) == ("It costs $x in total.", "1250.50")


def test_sv_drops_a_statement_that_states_another_number(tmp_path: Path) -> None:
    def misstating(request: Request) -> str | list[str]:
        text = text_of(request)
        if text.endswith("Statement:"):  # 2490 and 160 contain the answers 249 and 16
            answer = text.rsplit("Answer: ", 1)[1].split("\n")[0]
            return f"It adds up to {answer}0 in all.\n"
        return metamath_model(request)

    script = Script(misstating)
    out = outputs(tmp_path, recipe("metamath", {"samples": 2, "modes": ["SV"]},
                                   default=script), PROBLEMS)
    assert out == []
    assert sorted((row["reason"], row["detail"].strip()) for row in dropped(tmp_path)) == [
        ("SV: the statement does not state the answer", f"It adds up to {p['answer']}0 in all.")
        for p in sorted(PROBLEMS, key=lambda p: p["answer"] + "0")]
    assert all(text_of(r).endswith("Statement:") for r in script.requests)  # nothing solved
    assert not states("The school has 12 buses.", "2") and states("It costs $1,250.", "1250")
    assert not states("It is 2.5 km.", "2") and not states("It fell 5 degrees.", "-5")
    assert states("The share is 0.75.", "\\frac{3}{4}") and states("So x^2+1.", "x^2+1")


# -- MMIQC ----------------------------------------------------------------------------------

def compose_model(answers: dict[str, int]) -> Any:
    """A composer that doubles the seed's answer, and a sampler that answers once right and
    once with the seed's answer (consistent with the seed, not with the composer)."""
    def respond(request: Request) -> str | list[str]:
        text = text_of(request)
        if "Compose one new problem" in text:
            seed = text.split("Problem: ", 1)[1].split("\n")[0]
            seed_answer = int(text.split("\nAnswer: ", 1)[1].split("\n")[0])
            question = f"{seed} Then double the result."
            answers[question] = 2 * seed_answer
            return (f"Problem: {question}\nSolution: Twice {seed_answer} is "
                    f"{2 * seed_answer}.\nThe answer is {2 * seed_answer}.\n"
                    f"Answer: {2 * seed_answer}")
        right = answers[text]
        return [f"Doubling gives {right}.\nThe answer is {right}.",
                f"The answer is {right // 2}."]
    return respond


def test_mmiqc_seeds_each_iteration_from_the_last_and_rejects_inconsistent_solutions(
        tmp_path: Path) -> None:
    answers: dict[str, int] = {}
    composer, sampler = Script(compose_model(answers)), Script(compose_model(answers))
    pipe = recipe("mmiqc", {"rounds": 3, "samples": 2, "composer_backend": "composer",
                            "sampler_backend": "sampler"}, composer=composer, sampler=sampler)
    out = outputs(tmp_path, pipe, PROBLEMS)
    composed = {r["_meta"]["id"]: r for r in out if r["type"] == "composed"}
    sampled = [r for r in out if r["type"] == "rejection-sampled"]
    assert sorted(r["iteration"] for r in composed.values()) == [0, 0, 1, 1, 2, 2]
    for record in composed.values():
        if record["iteration"] == 0:
            assert record["seed_question"] in {p["question"] for p in PROBLEMS}
        else:  # seeded from the previous iteration's composed problem, and made from it
            [parent] = record["_meta"]["parents"]
            assert composed[parent]["iteration"] == record["iteration"] - 1
            assert record["seed_question"] == composed[parent]["question"]
    # every composer request after the first iteration shows a composed problem as its seed
    seeds = [text_of(r).split("Problem: ", 1)[1].split("\n")[0] for r in composer.requests]
    assert sorted(seeds) == sorted([p["question"] for p in PROBLEMS]
                                   + [r["question"] for r in composed.values()
                                      if r["iteration"] < 2])
    # the sampler is the other role; only its solutions agreeing with the composer are kept
    assert len(sampler.requests) == 6 and all(r.n == 2 for r in sampler.requests)
    assert len(sampled) == 6
    for record in sampled:
        assert composed[record["_meta"]["parents"][0]]["answer"] == record["answer"]
        assert record["response"].endswith(f"The answer is {record['answer']}.")
        assert record["_meta"]["verifier"]["correct"] is True
    assert [d["reason"] for d in dropped(tmp_path)] == \
        ["inconsistent with the composer's answer"] * 6


def test_mmiqc_drops_a_composed_solution_that_disagrees_with_its_own_answer(
        tmp_path: Path) -> None:
    answers: dict[str, int] = {}
    honest = compose_model(answers)

    def respond(request: Request) -> str | list[str]:
        found = honest(request)
        if isinstance(found, str) and SAVINGS in text_of(request):  # composing from SAVINGS
            return found.replace("The answer is 32.", "The answer is 33.")  # "Answer: 32"
        return found

    composer, sampler = Script(respond), Script(respond)
    pipe = recipe("mmiqc", {"rounds": 1, "samples": 2, "composer_backend": "composer",
                            "sampler_backend": "sampler"}, composer=composer, sampler=sampler)
    out = outputs(tmp_path, pipe, PROBLEMS)
    doubled = {p["question"]: f"{p['question']} Then double the result." for p in PROBLEMS}
    assert [r["question"] for r in out if r["type"] == "composed"] == [doubled[MUFFINS]]
    # the sampler's solutions that reach the composer's stated answer are still kept
    assert sorted((r["question"], r["answer"]) for r in out
                  if r["type"] == "rejection-sampled") == sorted(
        [(doubled[MUFFINS], "498"), (doubled[SAVINGS], "32")])
    [own] = [d for d in dropped(tmp_path) if d["record"]["type"] == "composed"]
    assert own["reason"] == "composer's solution disagrees with its answer"
    assert own["record"]["question"] == doubled[SAVINGS]
    assert own["record"]["_meta"]["verifier"]["predicted"] == "33"


# -- LEMA -----------------------------------------------------------------------------------

RIGHT = "Monday brings 45 * 3 = 135 dollars.\nTuesday brings 38 * 3 = 114 dollars.\n" \
        "Together 135 + 114 = 249 dollars.\nThe answer is 249."
SLIP = "Monday brings 45 * 3 = 135 dollars.\nTuesday brings 38 * 3 = 104 dollars.\n" \
       "Together 135 + 104 = 239 dollars.\nThe answer is 239."
MISREAD = "The two days sold 45 + 38 = 83 muffins.\nThe answer is 83."


def lema_teacher(request: Request) -> str:
    """Corrects the slip right (from step 2, keeping step 1), the misreading wrongly."""
    text = text_of(request)
    shown = text.rsplit("Original Solution:\n{\n", 1)[1]
    if "104" in shown:
        return ("Incorrect Step: Step 2.\nExplanation: 38 * 3 is 114, not 104.\n"
                "Correct Solution:\n{\n...\nStep 2: Tuesday brings 38 * 3 = 114 dollars.\n"
                "Step 3: Together 135 + 114 = 249 dollars.\nStep 4: The answer is 249.\n}")
    return ("Incorrect Step: Step 1.\nExplanation: It asks for money, not muffins.\n"
            "Correct Solution:\n{\nStep 1: The muffins cost 83 * 3 = 239 dollars.\n"
            "Step 2: The answer is 239.\n}")


def test_lema_corrects_only_wrong_solutions_and_keeps_right_corrections(
        tmp_path: Path) -> None:
    student = Script(lambda r: [RIGHT, SLIP, MISREAD, SLIP])
    teacher = Script(lema_teacher)
    pipe = recipe("lema", {"samples": 4, "student_backend": "student",
                           "teacher_backend": "teacher"}, student=student, teacher=teacher)
    out = outputs(tmp_path, pipe, PROBLEMS[:1])
    # the correct student solution is no mistake: the teacher never sees it
    assert len(teacher.requests) == 2
    shown = [text_of(r).rsplit("Question: ", 1)[1] for r in teacher.requests]
    assert not any("Tuesday brings 38 * 3 = 114" in s for s in shown)
    assert all("Step 1: " in s and "Original Solution:" in s for s in shown)
    [record] = out  # the misreading's correction still ends at a wrong answer: dropped
    assert record["wrong_solution"] == SLIP and record["incorrect_step"] == 2
    assert record["explanation"] == "38 * 3 is 114, not 104."
    assert record["corrected_solution"].splitlines() == RIGHT.splitlines()
    assert record["response"].startswith("Incorrect Step: Step 2.\nExplanation: 38 * 3")
    assert "Correct Solution:\n{\n...\nStep 2: Tuesday brings 38 * 3 = 114" in \
        record["response"]
    assert record["instruction"].endswith(
        "Original Solution:\n{\nStep 1: Monday brings 45 * 3 = 135 dollars.\n"
        "Step 2: Tuesday brings 38 * 3 = 104 dollars.\n"
        "Step 3: Together 135 + 104 = 239 dollars.\nStep 4: The answer is 239.\n}")
    verifier = record["_meta"]["verifier"]
    assert verifier["correct"] is True and verifier["student"]["correct"] is False
    assert sorted(d["reason"] for d in dropped(tmp_path)) == [
        "correct: no mistake to learn from", "duplicate wrong solution",
        "the correction's final answer is wrong"]
    sft = to_sft(record)
    assert sft and [m["role"] for m in sft["messages"]] == ["user", "assistant"]
    assert sft["messages"][1]["content"] == record["response"]


# -- Math-Shepherd --------------------------------------------------------------------------

STEPS = ["Monday brings 45 * 3 = 135 dollars.", "Tuesday brings 38 * 3 = 104 dollars.",
         "Together 135 + 104 = 239 dollars.", "The answer is 239."]


def shepherd_model(request: Request) -> str | list[str]:
    """Generates one solution whose step 2 is wrong; from step 1 half the completions reach
    the gold answer, from step 2 on none does."""
    text = text_of(request)
    if PREFIX_HEAD not in text:
        return "\n".join(STEPS)
    prefix = text.split(PREFIX_HEAD + "\n", 1)[1].split("\n\n")[0]
    if "104" in prefix:
        return ["The answer is 239."] * request.n
    return ["Tuesday brings 114.\nThe answer is 249.", "The answer is 250."] * (request.n // 2)


def test_math_shepherd_labels_steps_by_completions_from_exactly_that_prefix(
        tmp_path: Path) -> None:
    generator, completer = Script(shepherd_model), Script(shepherd_model)
    pipe = recipe("math-shepherd", {"solutions": 1, "completions": 4,
                                    "completer_backend": "completer"},
                  default=generator, completer=completer)
    [record] = outputs(tmp_path, pipe, PROBLEMS[:1])
    assert record["steps"] == STEPS
    assert record["labels"] == [True, False, False, False]  # hard: any completion right
    assert record["soft_labels"] == [0.5, 0.0, 0.0, 0.0]  # soft: the fraction right
    assert record["rollouts"][0] == {"correct": 2, "total": 4}
    prefixes = sorted(text_of(r).split(PREFIX_HEAD + "\n", 1)[1].split("\n\n")[0]
                      for r in completer.requests)
    assert prefixes == ["\n".join(STEPS[:i]) for i in (1, 2, 3)]  # steps 1..i, each i once
    assert all(r.n == 4 for r in completer.requests) and len(generator.requests) == 1
    assert record["_meta"]["verifier"]["correct"] is False  # the last step's own outcome
    [prm] = read_jsonl(export(tmp_path / "out" / "records.jsonl", "prm"))
    assert prm == {"prompt": MUFFINS, "completions": STEPS,
                   "labels": [True, False, False, False]}
    # not SFT data: the question with the bare gold answer (or a solution gone wrong) would
    # teach answering without reasoning (or wrong steps); the PRM export is the data
    assert read_jsonl(export(tmp_path / "out" / "records.jsonl", "sft")) == []
    assert read_jsonl(export(tmp_path / "out" / "records.jsonl", "alpaca")) == []
    assert to_sft(record) is None and to_alpaca(record) is None


def test_prm_shape_takes_stepwise_records_and_skips_others(tmp_path: Path) -> None:
    stepwise = {"prompt": "p", "completions": ["a", "b"], "labels": [1, 0]}
    shaped = to_prm(stepwise)
    assert shaped == {"prompt": "p", "completions": ["a", "b"], "labels": [True, False]}
    assert [type(v) for v in shaped["labels"]] == [bool, bool]  # TRL's stepwise labels
    assert to_prm({"question": "q", "steps": ["a"], "labels": [True, False]}) is None
    assert to_prm({"instruction": "Add", "output": "3"}) is None
    path = write_jsonl(tmp_path / "records.jsonl", [stepwise, {"instruction": "Add",
                                                               "output": "3"}])
    assert read_jsonl(export(path, "prm")) == [to_prm(stepwise)]
    assert read_jsonl(export(path, "sft")) == [
        {"messages": [{"role": "user", "content": "Add"},
                      {"role": "assistant", "content": "3"}]}]
