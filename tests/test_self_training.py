"""Self-training: the rounds hook that switches models, and the mechanisms of RFT, LMSI
(self-consistency), STaR and ReST-EM, each against the in-process fake backend."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from synthaug.errors import ConfigError
from synthaug.pipeline import Pipeline
from synthaug.records import Record, content
from synthaug.steps.base import Rounds, RoundsOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Sampling, Uses
from synthaug.steps.reason.common import cot_shots
from synthaug.testing.fake import Script, text_of
from synthaug.verify.answers import check, extract_answer
from tests.conftest import read_jsonl, run, write_jsonl

GREEDY = Sampling(temperature=0.0, max_tokens=16)


def manifest_of(out: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return found


def training_script(tmp: Path, reply: str = "{'model': 'sft-r' + os.environ['SYNTHAUG_ROUND']}"
                    ) -> str:
    """A between-rounds command: counts its runs, reads the round's data, prints a switch."""
    script = tmp / "train.py"
    script.write_text(
        "import json, os, pathlib, sys\n"
        f"count = pathlib.Path({str(tmp / 'runs.txt')!r})\n"
        "rows = [json.loads(l) for l in open(os.environ['SYNTHAUG_ROUND_DATA'])]\n"
        "with count.open('a') as f:\n"
        "    f.write(f\"{os.environ['SYNTHAUG_STEP']} {os.environ['SYNTHAUG_ROUND']} \"\n"
        "            f\"{os.environ['SYNTHAUG_MODEL']} {len(rows)}\\n\")\n"
        "print('training on', len(rows), 'records')\n"
        f"print(json.dumps({reply}))\n")
    return f"{sys.executable} {script}"


def hook_runs(tmp: Path) -> list[str]:
    path = tmp / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


class Echo(Rounds[RoundsOptions]):
    """A minimal rounds step: asks the model about every record once per round."""

    Options: ClassVar[type[StepOptions]] = RoundsOptions

    def uses(self) -> list[Uses]:
        return [Uses("default")]

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        self.pool = pool

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        made = []
        for record in self.pool:
            reply = await ctx.generate(str(record["q"]), GREEDY, seed=ctx.seed_for(record))
            made.append(ctx.derive([record], {"a": reply.text, "round": index}, index, reply))
        return made, False


def run_echo(tmp: Path, command: str, rounds: int = 3) -> list[Record]:
    script = Script(lambda request: "answer to " + text_of(request), name="echo-script")
    pipeline = Pipeline.from_steps(Echo(rounds=rounds, between_rounds=command),
                                   backends={"default": script.spec(model="base")})
    data = write_jsonl(tmp / "in.jsonl", [{"q": "one"}, {"q": "two"}])
    run(pipeline, tmp / "out", data)
    return read_jsonl(tmp / "out" / "records.jsonl")


def test_between_rounds_switches_the_model_and_a_rerun_reuses_the_result(tmp_path: Path) -> None:
    command = training_script(tmp_path)
    records = run_echo(tmp_path, command)
    by_round = {(r["round"], r["_meta"]["model"]) for r in records}
    assert by_round == {(0, "base"), (1, "sft-r0"), (2, "sft-r1")}
    # the command saw each round's records and the model that made them
    assert hook_runs(tmp_path) == ["0-echo 0 base 2", "0-echo 1 sft-r0 2", "0-echo 2 sft-r1 2"]
    rounds_dir = tmp_path / "out" / "rounds" / "0-echo"
    assert len(read_jsonl(rounds_dir / "round-1.jsonl")) == 2
    facts = manifest_of(tmp_path / "out")["steps"]["0-echo"]["rounds"]
    assert [(f["round"], f["model"], f["records"], f["switched_to"]["model"]) for f in facts] \
        == [(0, "base", 2, "sft-r0"), (1, "sft-r0", 2, "sft-r1"), (2, "sft-r1", 2, "sft-r2")]

    # a rerun of the same folder does not train again: the stored results switch the model
    again = run_echo(tmp_path, command)
    assert hook_runs(tmp_path) == ["0-echo 0 base 2", "0-echo 1 sft-r0 2", "0-echo 2 sft-r1 2"]
    assert again == records
    facts = manifest_of(tmp_path / "out")["steps"]["0-echo"]["rounds"]
    assert [f["hook"] for f in facts] == ["reused"] * 3
    assert [f["model"] for f in facts] == ["base", "sft-r0", "sft-r1"]


def test_a_hook_without_a_switch_keeps_the_model(tmp_path: Path) -> None:
    records = run_echo(tmp_path, training_script(tmp_path, reply="'done'"), rounds=2)
    assert {r["_meta"]["model"] for r in records} == {"base"}
    assert len(hook_runs(tmp_path)) == 2


@pytest.mark.parametrize(("reply", "field"), [("{'modle': 'x'}", "modle"),
                                              ("{'api_key': 'sk-1'}", "api_key")])
def test_a_bad_switch_fails_naming_the_option(tmp_path: Path, reply: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        run_echo(tmp_path, training_script(tmp_path, reply=reply), rounds=2)


# -- RFT -----------------------------------------------------------------------------------
PENCILS = "Sam has 5 boxes of 8 pencils and gives away 13. How many pencils are left?"
SAME_A = "Sam has 5 * 8 = 40 pencils.\nThen 40 - 13 = 27 are left.\nThe answer is 27."
SAME_B = "He starts with 5 * 8 = 40.\nGiving 13 away leaves 40 - 13 = 27.\nThe answer is 27."
OTHER = "Each box loses nothing, so 5 * 8 - 13 = 27 pencils remain.\nThe answer is 27."
WRONG = "Sam has 5 * 8 = 40 pencils.\nThen 40 - 12 = 28 are left.\nThe answer is 28."
MISCOUNTED = "Sam has 5 * 8 = 41 pencils.\nThen 41 - 14 = 27 are left.\nThe answer is 27."


def last_user(request: Any) -> str:
    return str([m for m in request.messages if m["role"] == "user"][-1]["content"])


def run_steps(tmp: Path, *steps: Any, rows: list[Record], formats: tuple[str, ...] = (),
              **scripts: Script) -> list[Record]:
    pipeline = Pipeline.from_steps(*steps, backends={r: s.spec() for r, s in scripts.items()})
    tmp.mkdir(parents=True, exist_ok=True)
    run(pipeline, tmp / "out", write_jsonl(tmp / "in.jsonl", rows), formats=formats)
    return read_jsonl(tmp / "out" / "records.jsonl")


def dropped(tmp: Path) -> list[tuple[str, str]]:
    return [(row["reason"], row["record"]["rationale"])
            for row in read_jsonl(tmp / "out" / "dropped.jsonl")]


def test_rft_keeps_correct_computing_paths_one_per_equation_list(tmp_path: Path) -> None:
    from synthaug.steps.reason.rft import RejectionSampling

    samples = [SAME_A, WRONG, SAME_B, MISCOUNTED, OTHER]
    script = Script(lambda request: samples if last_user(request) == PENCILS else "?")
    step = RejectionSampling(k=len(samples))
    records = run_steps(tmp_path, step, rows=[{"question": PENCILS, "answer": "27"}],
                        formats=("sft",), default=script)

    kept = [r["rationale"] for r in records]
    assert WRONG not in kept and MISCOUNTED not in kept  # wrong answer, wrong arithmetic
    assert OTHER in kept  # another equation list is another reasoning path
    assert len([t for t in kept if t in (SAME_A, SAME_B)]) == 1  # same equations: one kept
    assert sorted(dropped(tmp_path)) == sorted([
        ("wrong answer", WRONG), ("calculation error", MISCOUNTED),
        ("duplicate equations", SAME_B if SAME_A in kept else SAME_A)])
    for record in records:
        assert record["_meta"]["verifier"]["correct"] is True
        assert record["messages"] == [{"role": "user", "content": PENCILS},
                                      {"role": "assistant", "content": record["rationale"]}]
    sft = read_jsonl(tmp_path / "out" / "records.sft.jsonl")
    assert [row["messages"] for row in sft] == [r["messages"] for r in records]
    # every path was sampled at the paper's temperature, k at once
    assert [(r.n, r.temperature) for r in script.requests] == [(5, 0.7)]


def test_rft_u_pools_the_paths_of_several_models(tmp_path: Path) -> None:
    from synthaug.steps.reason.rft import RejectionSampling

    first = Script(lambda request: [SAME_A, WRONG])
    second = Script(lambda request: [SAME_B, OTHER])
    step = RejectionSampling(k=2, backends=["default", "second"], keep="first")
    records = run_steps(tmp_path, step, rows=[{"question": PENCILS, "answer": 27}],
                        default=first, second=second)
    assert sorted(r["rationale"] for r in records) == sorted([SAME_A, OTHER])


def test_rft_farthest_keeps_the_most_different_path_of_an_equation_list() -> None:
    from synthaug.steps.reason.rft import Candidate, select_distinct
    from tests.recipe_helpers import a_reply

    def path(text: str, key: str) -> Candidate:
        return Candidate(text, a_reply(text), check(text, "27"), (key,))

    near = path("a b c d", "x")
    far = path("p q r s t u", "x")
    other = path("a b c e", "y")
    kept, duplicates = select_distinct([near, other, far], "farthest")
    assert kept == [far, other] and duplicates == [near]
    kept, duplicates = select_distinct([near, other, far], "first")
    assert kept == [near, other] and duplicates == [far]


# -- LMSI (self-consistency) -----------------------------------------------------------------
SPLIT = "Four friends share some apples. How many apples does each get?"
TIE = "Two friends share some pears. How many pears does each get?"


def lmsi_run(tmp: Path, rows: list[Record]) -> tuple[list[Record], Script]:
    from synthaug.steps.reason.lmsi import SelfConsistency

    unsure = "I am not sure how to do this."
    def paths(question: str) -> list[str]:
        if question == PENCILS:
            return [SAME_A, WRONG, SAME_B, unsure, OTHER]
        counts = (1, 2, 3, 4, 4) if question == SPLIT else (1, 1, 2, 2, 3)
        return [f"Each gets {n}.\nThe answer is {n}." for n in counts]

    script = Script(lambda request: paths(last_user(request)))
    records = run_steps(tmp, SelfConsistency(m=5, min_agreement=0.5), rows=rows,
                        formats=("sft",), default=script)
    return records, script


def test_lmsi_keeps_majority_paths_in_mixed_formats_without_reading_gold(tmp_path: Path) -> None:
    # the label disagrees with the majority: a step that read it would keep other paths
    records, script = lmsi_run(tmp_path / "a", [{"question": PENCILS, "answer": "28"},
                                                {"question": SPLIT, "answer": "1"},
                                                {"question": TIE, "answer": "2"}])
    by_format: dict[str, list[str]] = {}
    for record in records:
        assert record["question"] == PENCILS and record["majority_answer"] == "27"
        assert record["_meta"]["verifier"]["agreement"] == 0.6
        by_format.setdefault(record["format"], []).append(record["rationale"])
    assert {f: sorted(t) for f, t in by_format.items()} == {
        "cot": sorted([SAME_A, SAME_B, OTHER]), "zero-shot-cot": sorted([SAME_A, SAME_B, OTHER]),
        "direct": ["The answer is 27."], "direct-zero-shot": ["The answer is 27."]}
    reasons = [(row["reason"], row["record"].get("rationale", row["record"]["question"]))
               for row in read_jsonl(tmp_path / "a" / "out" / "dropped.jsonl")]
    assert sorted(reasons) == sorted([("minority answer", WRONG),
                                      ("no answer found", "I am not sure how to do this."),
                                      ("low agreement", SPLIT),  # 2/5 agree on 4
                                      ("tied vote", TIE)])  # 2 say 1, 2 say 2

    shapes = {r["format"]: r["messages"] for r in records}
    assert shapes["direct-zero-shot"] == [{"role": "user", "content": PENCILS},
                                          {"role": "assistant", "content": "The answer is 27."}]
    assert shapes["zero-shot-cot"][0]["content"].endswith("Let's think step by step.")
    assert len(shapes["cot"]) > 3 and len(shapes["direct"]) > 3  # exemplars come first
    assert "=" in shapes["cot"][2]["content"] and "=" not in shapes["direct"][2]["content"]
    assert len(read_jsonl(tmp_path / "a" / "out" / "records.sft.jsonl")) == len(records)

    # without the label, the same requests and the same outputs
    again, second = lmsi_run(tmp_path / "b", [{"question": PENCILS}, {"question": SPLIT},
                                              {"question": TIE}])
    assert sorted((str(r.messages), r.seed) for r in second.requests) == \
        sorted((str(r.messages), r.seed) for r in script.requests)
    assert [content(r) for r in again] == [content(r) for r in records]


# -- STaR ------------------------------------------------------------------------------------
TICKETS = "Adults pay $12 and children $7. What do 2 adults and 3 children pay?"
TICKETS_WRONG = "2 * 12 = 24 and 3 * 7 = 20, so 24 + 20 = 44.\nThe answer is 44."
TICKETS_RATIONALIZED = "The adults pay 2 * 12 = 24.\nThe children pay 3 * 7 = 21.\n" \
                       "Together 24 + 21 = 45.\nThe answer is 45."
EGGS = "A hen lays 3 eggs a day. How many eggs in 4 days?"
EGGS_LEAKY = "We are told the answer is 12, so 3 * 4 = 12.\nThe answer is 12."
COINS = "Tom has 3 coins and finds 5 more. How many coins does he have?"


def star_model(request: Any) -> str:
    """Right on the pencils; wrong on the others unless the answer is given in the prompt."""
    asked = last_user(request)
    if asked.startswith(PENCILS):
        return SAME_A
    hinted = "(Answer:" in asked
    if asked.startswith(TICKETS):
        return TICKETS_RATIONALIZED if hinted else TICKETS_WRONG
    if asked.startswith(COINS):  # wrong even with the answer in view
        return "3 + 4 = 7.\nThe answer is 7."
    return EGGS_LEAKY if hinted else "3 + 4 = 7.\nThe answer is 7."


def test_star_rationalizes_failures_without_leaking_the_hint(tmp_path: Path) -> None:
    from synthaug.steps.reason.star import STaR

    script = Script(star_model)
    step = STaR(rounds=2, between_rounds=training_script(tmp_path))
    rows = [{"question": PENCILS, "answer": "27"}, {"question": TICKETS, "answer": "45"},
            {"question": EGGS, "answer": "12"}, {"question": COINS, "answer": "8"}]
    records = run_steps(tmp_path, step, rows=rows, formats=("sft",), default=script)

    kept = {(r["round"], r["origin"], r["_meta"]["model"], r["rationale"]) for r in records}
    assert kept == {(0, "rationale", "default", SAME_A),
                    (0, "rationalization", "default", TICKETS_RATIONALIZED),
                    (1, "rationale", "sft-r0", SAME_A),
                    (1, "rationalization", "sft-r0", TICKETS_RATIONALIZED)}
    for record in records:  # stored as if written without the hint
        assert record["messages"] == [{"role": "user", "content": record["question"]},
                                      {"role": "assistant", "content": record["rationale"]}]
        assert "(Answer:" not in json.dumps(record) and record["_meta"]["verifier"]["correct"]
    reasons = sorted((row["reason"], row["record"]["question"])
                     for row in read_jsonl(tmp_path / "out" / "dropped.jsonl"))
    assert reasons == sorted([("wrong answer", TICKETS), ("wrong answer", EGGS),
                              ("mentions the hint", EGGS), ("wrong answer", COINS),
                              ("rationalization wrong", COINS)] * 2)
    # every round re-asks every problem (with the model the hook switched to); hints only
    # for the failures
    asked = [last_user(r) for r in script.requests]
    assert sum(q == PENCILS for q in asked) == 2 and sum(q == TICKETS for q in asked) == 2
    assert sorted(q for q in asked if "(Answer:" in q) == \
        sorted([f"{TICKETS} (Answer: 45)", f"{EGGS} (Answer: 12)", f"{COINS} (Answer: 8)"] * 2)
    # a rationalization prompt hints every exemplar's answer too, as the paper's prompt does
    # (the model sees worked solutions that reach the answer after the question's hint)
    shots = cot_shots()[:4]
    for request in script.requests:
        users = [m["content"] for m in request.messages if m["role"] == "user"]
        answers = [m["content"] for m in request.messages if m["role"] == "assistant"]
        assert answers == [shot["solution"] for shot in shots]
        hinted = "(Answer:" in users[-1]
        assert users[:-1] == [f"{shot['question']} (Answer: {extract_answer(shot['solution'])})"
                              if hinted else shot["question"] for shot in shots]
    sft = read_jsonl(tmp_path / "out" / "records.sft.jsonl")
    assert [row["messages"] for row in sft] == [r["messages"] for r in records]


# -- ReST-EM / ReST --------------------------------------------------------------------------
def rest_policy(request: Any) -> list[str]:
    if last_user(request) == PENCILS:
        return [SAME_A, WRONG, SAME_B, OTHER]
    return [TICKETS_WRONG, TICKETS_WRONG, TICKETS_RATIONALIZED, TICKETS_WRONG]


def test_rest_em_rounds_verify_cap_train_and_switch_the_model(tmp_path: Path) -> None:
    from synthaug.steps.reason.rest import ReSTEM

    rows = [{"question": PENCILS, "answer": "27"}, {"question": TICKETS, "answer": "45"}]
    command = training_script(tmp_path)

    def once() -> list[Record]:
        step = ReSTEM(rounds=2, k=4, max_per_problem=2, between_rounds=command)
        return run_steps(tmp_path, step, rows=rows, formats=("sft",),
                         default=Script(rest_policy, name="rest-policy"))

    records = once()
    for index, model in ((0, "default"), (1, "sft-r0")):
        made = [r for r in records if r["round"] == index]
        assert {r["_meta"]["model"] for r in made} == {model}  # round 1 samples the new model
        pencils = [r["rationale"] for r in made if r["question"] == PENCILS]
        assert len(pencils) == 2 and set(pencils) < {SAME_A, SAME_B, OTHER}  # capped at 2
        assert [r["rationale"] for r in made if r["question"] == TICKETS] == \
            [TICKETS_RATIONALIZED]
        assert all(r["_meta"]["verifier"]["correct"] and r["reward"] == 1.0 for r in made)
    reasons = sorted(row["reason"] for row in read_jsonl(tmp_path / "out" / "dropped.jsonl"))
    assert reasons == sorted((["wrong answer"] * 4 + ["over the per-problem cap"]) * 2)
    assert hook_runs(tmp_path) == ["0-restem 0 default 3", "0-restem 1 sft-r0 3"]
    facts = manifest_of(tmp_path / "out")["steps"]["0-restem"]["rounds"]
    assert [(f["round"], f["model"], f["threshold"], f["generated"], f["passed"], f["records"],
             f["switched_to"]["model"]) for f in facts] == \
        [(0, "default", 1.0, 8, 4, 3, "sft-r0"), (1, "sft-r0", 1.0, 8, 4, 3, "sft-r1")]
    assert len(read_jsonl(tmp_path / "out" / "records.sft.jsonl")) == 6

    assert once() == records  # a rerun: same records, and the training command is not rerun
    assert len(hook_runs(tmp_path)) == 2


def test_rest_improve_steps_raise_the_threshold_on_one_grow_step(tmp_path: Path) -> None:
    from synthaug.steps.reason.rest import ReSTEM

    grades = {SAME_A: "9", SAME_B: "6", OTHER: "3", WRONG: "1"}
    grader = Script(lambda request: next(g for t, g in grades.items() if t in last_user(request)))
    policy = Script(rest_policy)
    step = ReSTEM(rounds=1, k=4, reward="judge", thresholds=[0.5, 0.8], max_per_problem=None,
                  between_rounds=training_script(tmp_path))
    records = run_steps(tmp_path, step, rows=[{"question": PENCILS, "answer": "27"}],
                        default=policy, reward=grader)
    kept = {(r["round"], r["rationale"], r["reward"]) for r in records}
    assert kept == {(0, SAME_A, 0.9), (0, SAME_B, 0.6), (1, SAME_A, 0.9)}
    assert len(policy.requests) == 1  # both Improve steps filter the same Grow samples
    facts = manifest_of(tmp_path / "out")["steps"]["0-restem"]["rounds"]
    assert [(f["grow"], f["improve"], f["threshold"], f["records"]) for f in facts] == \
        [(0, 0, 0.5, 2), (0, 1, 0.8, 1)]
    with pytest.raises(ValueError, match="decrease"):
        ReSTEM(thresholds=[0.8, 0.5])
