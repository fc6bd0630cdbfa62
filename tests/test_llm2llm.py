"""LLM2LLM: the student's errors on the seed set, and only there, become teacher examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from synthaug.backends.base import Request
from synthaug.errors import ConfigError, ParseError
from synthaug.pipeline import Pipeline
from synthaug.records import Record
from synthaug.steps.reason.llm2llm import LLM2LLM, consistent, new_examples
from synthaug.testing.fake import Script
from tests.conftest import read_jsonl, run, write_jsonl
from tests.test_self_training import hook_runs, training_script

SEEDS = [{"question": "Sam has 5 boxes of 8 pencils and gives away 13. How many are left?",
          "answer": "27"},
         {"question": "A bus holds 48 students. How many buses carry 96 students?",
          "answer": "2"},
         {"question": "Mia reads 12 pages a day for 5 days, then 6 more. How many pages?",
          "answer": "66"}]
PENCILS, BUSES, PAGES = (s["question"] for s in SEEDS)


def last_user(request: Request) -> str:
    return str([m for m in request.messages or () if m["role"] == "user"][-1]["content"])


def student(fixed: set[str]) -> Script:
    """A student that answers BUSES and the `fixed` seeds right, anything else wrong."""
    def respond(request: Request) -> str:
        question = last_user(request)
        right = {s["question"]: s["answer"] for s in SEEDS}.get(question)
        if question == BUSES or question in fixed:
            return f"Working it out.\nThe answer is {right}."
        return "I guess.\nThe answer is 1000."
    return Script(respond)


def teacher_reply(request: Request) -> str:
    """A new problem like the seed in the prompt (for PAGES also one whose solution ends at
    another answer than the one it states)."""
    problem = last_user(request).split("Problem: ", 1)[1].split("\n", 1)[0]
    count = sum(1 for r in TEACHER.requests if problem in last_user(r))
    block = (f"Question: NEW {count} like <{problem}>\nSolution: 4 * 5 = 20.\n"
             "The answer is 20.\nAnswer: 20\n")
    if problem == PAGES:
        block += f"Question: BAD like <{problem}>\nSolution: 3 + 4 = 7.\nAnswer: 8\n"
    return block


TEACHER = Script(teacher_reply, name="llm2llm-teacher")


def run_llm2llm(tmp: Path, seeds: list[Record] = SEEDS, teacher: Script = TEACHER,
                fixed: frozenset[str] = frozenset({PENCILS}),
                **options: Any) -> tuple[list[Record], Script, Script]:
    base, trained = student(set()), student(set(fixed))
    reply = f"{{'model': 'sft-r' + os.environ['SYNTHAUG_ROUND'], 'script': '{trained.name}'}}"
    step = LLM2LLM(between_rounds=training_script(tmp, reply=reply), **options)
    pipeline = Pipeline.from_steps(step, backends={
        "default": base.spec(model="base"), "teacher": teacher.spec(model="teacher-model")})
    teacher.requests.clear()
    run(pipeline, tmp / "out", write_jsonl(tmp / "in.jsonl", seeds))
    return read_jsonl(tmp / "out" / "records.jsonl"), base, trained


def test_student_errors_on_seeds_only_become_teacher_examples(tmp_path: Path) -> None:
    records, base, trained = run_llm2llm(tmp_path, rounds=3)

    # every round the student answers the seed set, and only it (augmented data is never
    # evaluated, so never augmented again); round 0 with the given model, later rounds with
    # the model the training command switched to
    assert sorted(last_user(r) for r in base.requests) == sorted([PENCILS, BUSES, PAGES])
    assert sorted(last_user(r) for r in trained.requests) == sorted([PENCILS, BUSES, PAGES] * 2)
    # the training command ran after every round, on that round's examples
    assert hook_runs(tmp_path) == ["0-llm2llm 0 base 2", "0-llm2llm 1 sft-r0 1",
                                   "0-llm2llm 2 sft-r1 1"]

    # the teacher sees the failed seed problems only: PENCILS and PAGES in round 0, PAGES after
    taught = [last_user(r).split("Problem: ", 1)[1].split("\n", 1)[0] for r in TEACHER.requests]
    assert sorted(taught) == sorted([PENCILS, PAGES, PAGES, PAGES])
    assert all("NEW" not in t and "BAD" not in t for t in taught)
    assert all("Reference answer: " in last_user(r) for r in TEACHER.requests)

    kept = [(r["round"], r["seed_question"], r["_meta"]["llm2llm"]["student_model"])
            for r in records]
    assert sorted(kept) == sorted([(0, PENCILS, "base"), (0, PAGES, "base"),
                                   (1, PAGES, "sft-r0"), (2, PAGES, "sft-r1")])
    for record in records:
        assert record["question"].startswith("NEW")
        assert record["_meta"]["model"] == "teacher-model"
        assert record["_meta"]["verifier"]["correct"] is True
        assert record["messages"] == [{"role": "user", "content": record["question"]},
                                      {"role": "assistant", "content": record["solution"]}]
        assert record["_meta"]["llm2llm"]["student_answer"] == "1000"

    # an example whose solution ends at another answer than it states is dropped
    drops = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert {d["reason"] for d in drops} == {"solution ends at another answer"}
    assert all(d["record"]["question"].startswith("BAD") for d in drops)

    # the trainer gets D_{n+1}: the seed set plus every example so far
    rounds_dir = tmp_path / "out" / "rounds" / "0-llm2llm"
    sizes = [len(read_jsonl(rounds_dir / f"round-{i}.train.jsonl")) for i in range(3)]
    assert sizes == [3 + 2, 3 + 3, 3 + 4]
    facts = json.loads((tmp_path / "out" / "manifest.json").read_text())
    rounds = facts["steps"]["0-llm2llm"]["rounds"]
    assert [(f["model"], f["seed_wrong"], f["new_examples"]) for f in rounds] == [
        ("base", 2, 2), ("sft-r0", 1, 1), ("sft-r1", 1, 1)]


CRATES = "A crate holds 9 pears. How many pears are in 2 crates?"


def test_a_question_the_teacher_repeats_is_dropped(tmp_path: Path) -> None:
    # for every failed seed, in every round, the teacher writes a seed problem again and the
    # same new problem: only that problem's first writing is kept
    teacher = Script(lambda request: (
        f"Question: {PENCILS}\nSolution: 5 * 8 = 40 and 40 - 13 = 27.\nAnswer: 27\n\n"
        f"Question: {CRATES}\nSolution: 9 * 2 = 18.\nAnswer: 18"), name="llm2llm-repeater")
    records, _, _ = run_llm2llm(tmp_path, teacher=teacher, fixed=frozenset(), rounds=2)
    assert len(teacher.requests) == 4  # PENCILS and PAGES fail in both rounds
    assert [(r["question"], r["round"]) for r in records] == [(CRATES, 0)]
    drops = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert sorted((d["reason"], d["record"]["question"], d["record"]["round"])
                  for d in drops) == sorted(
        [("duplicate question", PENCILS, n) for n in (0, 0, 1, 1)]
        + [("duplicate question", CRATES, n) for n in (0, 1, 1)])


def test_rounds_stop_when_the_student_gets_every_seed_right(tmp_path: Path) -> None:
    # PENCILS (fixed by training) and BUSES
    records, _, trained = run_llm2llm(tmp_path, seeds=SEEDS[:2], rounds=3)
    assert [r["round"] for r in records] == [0]
    assert len(trained.requests) == 2  # round 1 evaluated the seeds, found no error, stopped


def test_a_switched_student_must_not_be_the_teacher() -> None:
    step = LLM2LLM(teacher="default", between_rounds="true")
    with pytest.raises(ConfigError, match="teacher"):
        step.prepare()
    LLM2LLM(teacher="default").prepare()  # one round without training: one model may do both


def test_teacher_reply_parsing() -> None:
    found = new_examples("Question: Q1?\nSolution: 2 + 2 = 4.\nAnswer: 4.\n\n"
                         "Question: Q2?\nSolution: 3 * 3 = 9, so the answer is 9.\nAnswer: 9")
    assert found == [("Q1?", "2 + 2 = 4.", "4"),
                     ("Q2?", "3 * 3 = 9, so the answer is 9.", "9")]
    with pytest.raises(ParseError):
        new_examples("Here is a problem: what is 2 + 2?")
    assert consistent("2 + 2 = 4.", "4") == ("2 + 2 = 4.\nThe answer is 4.", ANY)
    assert consistent("2 + 2 = 4.", "5") is None  # no stated answer: its last number must match
    assert consistent("2 + 2 = 4.\nThe answer is 4.", "5") is None
