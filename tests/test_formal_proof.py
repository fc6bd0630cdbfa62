"""DeepSeek-Prover-style formal proofs: every defining step, checked by the real coqc."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from synthaug.backends.base import Request
from synthaug.pipeline import Pipeline
from synthaug.steps.reason.formal import FormalProof, proof_of, split_statement, statement_of
from synthaug.testing.fake import Script, text_of
from tests.conftest import read_jsonl, run, write_jsonl

pytestmark = pytest.mark.skipif(shutil.which("coqc") is None,
                                reason="coqc not installed (make test installs Debian's coq)")

# problem -> (statement, grade, proof of the statement, proof of the negation, proof of False)
CASES = {
    "true": ("forall n : nat, n + 0 = n", "good", "intros n. lia.", "lia.", None),
    "admitted": ("forall a b : nat, a + b = b + a", "excellent", "Admitted.", "lia.", None),
    "false": ("forall n : nat, n + 1 = n", "good", "lia.",
              "intros H. specialize (H 0). simpl in H. discriminate.", None),
    "poor": ("forall n : nat, n = n", "poor", "reflexivity.", "lia.", None),
    "absurd": ("forall n : nat, n < 0 -> n = 5", "good", "intros n H. lia.", "lia.",
               "intros n H. lia."),
    "untyped": ("forall n : nat, n + true = n", "good", "lia.", "lia.", None),
    "nosuch": ("forall n : nat, n + 1 = 0 -> False", "good", "intros n H. lia.", "lia.",
               "intros n H. lia."),
}


def responder(request: Request) -> str:
    text = text_of(request)
    for name, (statement, grade, proof, negation, absurd) in CASES.items():
        if text.endswith(f"Problem: {name}"):
            return f"Theorem t : {statement}."
        if f"Problem: {name}\n" in text:
            return f"The statement matches the problem.\nGrade: {grade}"
        if text.endswith(f"Theorem goal : ~ ({statement})."):
            return f"Proof.\n{negation}\nQed."
        if text.endswith(f"Theorem goal : {statement}."):
            return f"```coq\nProof.\n{proof}\nQed.\n```"
        if absurd and "-> False." in text and statement.split(",")[0] in text:
            return f"Proof. {absurd} Qed."
    return "Proof. lia. Qed."


def test_only_coq_checked_proofs_of_consistent_good_statements_are_kept(tmp_path: Path) -> None:
    script = Script(responder)
    step = FormalProof(attempts=1, reject_inconsistent=True)
    pipeline = Pipeline.from_steps(step, backends={"default": script.spec()})
    data = write_jsonl(tmp_path / "in.jsonl", [{"problem": name} for name in CASES])
    run(pipeline, tmp_path / "out", data)
    kept = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert sorted(r["problem"] for r in kept) == ["nosuch", "true"]  # "no n with": no absurdity
    record = next(r for r in kept if r["problem"] == "true")
    assert record["formal_statement"] == "forall n : nat, n + 0 = n"
    assert record["proof"] == "intros n. lia."
    assert record["_meta"]["verifier"]["verifier"] == "coq"
    assert record["messages"][1]["content"] == "Proof.\nintros n. lia.\nQed."
    reasons = {r["record"]["problem"]: r["reason"]
               for r in read_jsonl(tmp_path / "out" / "dropped.jsonl")}
    assert reasons == {
        "admitted": "no proof in 1 attempts",
        "false": "statement is false (its negation was proved)",
        "poor": "statement quality poor",
        "absurd": "inconsistent hypotheses (False proved)",
        "untyped": "statement does not typecheck",
    }
    # the poor statement was never sent for proving: the quality filter comes first
    asked = [text_of(r) for r in script.requests]
    assert not any(t.endswith("Theorem goal : forall n : nat, n = n.") for t in asked)


def test_statement_parsing_and_hypothesis_split() -> None:
    assert statement_of("```coq\nTheorem x : forall n : nat, n = n.\n```") == \
        "forall n : nat, n = n"
    prefix, hyps, goal = split_statement("forall (a b : nat), a < b -> (b < 3 -> a = 0) -> a < 3")
    assert (prefix, hyps, goal) == ("forall (a b : nat),", ["a < b", "(b < 3 -> a = 0)"],
                                    "a < 3")
    assert proof_of("Sure.\n```coq\nProof.\n  lia.\nQed.\n```") == "lia."


def test_admitted_steps_and_axioms_are_never_a_proof() -> None:
    step = FormalProof()
    step.prepare()
    smuggled = "Admitted.\nLemma other : True.\nProof. exact I."  # compiles without the guards
    assert asyncio.run(step.compiles("forall a b : nat, a + b = b + a", smuggled)) == \
        (False, "the proof admits a step or adds an axiom")
    classical = FormalProof(imports=("Arith", "Lia", "Classical"))
    classical.prepare()
    # compiles, but rests on the axiom of excluded middle: only Print Assumptions sees it
    assert asyncio.run(classical.compiles("forall P : Prop, ~ ~ P -> P",
                                          "intros P H. apply NNPP. exact H.")) == \
        (False, "the proof depends on assumptions")
    assert asyncio.run(classical.compiles("forall n : nat, n + 0 = n", "intros n. lia.")) == \
        (True, "compiled")
