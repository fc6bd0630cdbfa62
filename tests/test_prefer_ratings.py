"""UltraFeedback, HelpSteer and DEITA do what their papers do: each test drives the built-in
recipe against the in-process OpenAI-shaped server (pool members answer under their own names,
the judge under "m") and checks one defining step of the method."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from synthaug import registry
from synthaug.errors import ParseError
from synthaug.io import data_file
from synthaug.pipeline import load_recipe
from synthaug.steps.base import guarded
from synthaug.steps.prefer.common import settled
from synthaug.steps.prefer.deita import DeitaSelect
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl
from tests.recipe_helpers import a_context, prompt_of, recipe_pipeline, run_recipe

# -- UltraFeedback ---------------------------------------------------------------------------

UF = load_recipe(registry.recipe_files()["ultrafeedback"])
PRINCIPLES: list[str] = UF.steps[0].with_.get("system_messages", [])
POOL = [m["name"] for m in UF.backends["policy"].with_["members"]]
ASPECTS = ["instruction_following", "truthfulness", "honesty", "helpfulness"]
# per model, per aspect: smol-a and smol-c share the best mean (4.0); smol-b has the best
# helpfulness alone (mean 2.75); smol-d and smol-e are worse
SCORES = {"smol-a": dict.fromkeys(ASPECTS, 4),
          "smol-b": {**dict.fromkeys(ASPECTS, 2), "helpfulness": 5},
          "smol-c": dict.fromkeys(ASPECTS, 4),
          "smol-d": {"instruction_following": 3, "truthfulness": 2, "honesty": 2,
                     "helpfulness": 1},
          "smol-e": dict.fromkeys(ASPECTS, 1)}


def uf_server(rationale: bool = True) -> Any:
    """Pool members answer in their own name; the judge rates every text it is shown on the
    aspect of the rubric it was given, from SCORES."""
    def respond(body: dict[str, Any]) -> Reply:
        if body["model"] in POOL:
            return Reply(text=f"Answer by {body['model']}.")
        text = prompt_of(body)
        aspect = aspect_of(text)
        shown = re.findall(r"<text (\d+)>\nAnswer by ([\w-]+)\.\n</text \1>", text)
        assert shown, text
        why = "Rationale: checked against the rubric.\n" if rationale else ""
        return Reply(text="\n".join(f"Text {i}\n{why}Rating: {SCORES[m][aspect]}"
                                    for i, m in shown))
    return respond


def aspect_of(text: str) -> str:
    """The one aspect a judge prompt asks about."""
    [aspect] = re.findall(r"Rubric \((\w+)\)", text)
    return str(aspect)


def uf_run(tmp: Path, server: FakeOpenAIServer, **kw: Any) -> list[dict[str, Any]]:
    run_recipe("ultrafeedback", server, tmp, **kw)  # the shipped 12 prompts
    return read_jsonl(tmp / "out" / "records.jsonl")


def test_ultrafeedback_samples_models_from_the_pool_and_a_principle_per_completion(
        tmp_path: Path) -> None:
    with FakeOpenAIServer(uf_server()) as server:
        records = uf_run(tmp_path, server)
        policy_calls = [b for b in server.calls if b["model"] in POOL]
    assert len(POOL) == 5 and len(records) == 12 and len(PRINCIPLES) == 10
    drawn = []
    for record in records:
        models = [c["model"] for c in record["completions"]]
        assert len(models) == 4 and len(set(models)) == 4 and set(models) <= set(POOL)
        drawn.append(frozenset(models))
        for item in record["completions"]:  # the text came from that model, under a principle
            assert item["text"] == f"Answer by {item['model']}."
            assert item["system_message"] in PRINCIPLES
    assert len(set(drawn)) > 1 and set().union(*drawn) == set(POOL)  # drawn per prompt
    assert len(policy_calls) == 48
    systems = [b["messages"][0]["content"] for b in policy_calls
               if b["messages"][0]["role"] == "system"]
    assert len(systems) == 48 and set(systems) <= set(PRINCIPLES)
    # drawn per completion: prompts whose completions got different principles, and every
    # principle family (helpfulness 0-5, truthfulness 6-7, honesty 8, calibration 9) in use
    assert sum(len({c["system_message"] for c in r["completions"]}) > 1 for r in records) >= 6
    families = {0 if i < 6 else 1 if i < 8 else i - 6 for i in map(PRINCIPLES.index, systems)}
    assert families == {0, 1, 2, 3}


def test_ultrafeedback_rates_all_completions_together_per_aspect_with_rationales(
        tmp_path: Path) -> None:
    with FakeOpenAIServer(uf_server()) as server:
        records = uf_run(tmp_path, server)
        judge_calls = [prompt_of(b) for b in server.calls if b["model"] not in POOL]
    assert len(judge_calls) == 12 * 4  # one call per prompt and aspect
    for text in judge_calls:
        assert len(re.findall(r"<text \d>", text)) == 4  # the 4 completions, together
        assert "Rationale" in text and "from 1 to 5" in text
    assert Counter(map(aspect_of, judge_calls)) == dict.fromkeys(ASPECTS, 12)
    rubrics = UF.steps[1].with_["aspects"]
    for aspect in ASPECTS:  # each aspect is judged on its own 1-5 rubric
        assert sum(rubrics[aspect] in t for t in judge_calls) == 12
    for record in records:
        for item in record["completions"]:
            assert set(item["ratings"]) == set(ASPECTS)
            for aspect, given in item["ratings"].items():
                assert given["score"] == SCORES[item["model"]][aspect]
                assert given["rationale"] == "checked against the rubric."
            assert item["rating"] == sum(SCORES[item["model"]].values()) / 4


@pytest.mark.parametrize("judge", ["no rationale", "no texts"])
def test_ultrafeedback_ratings_without_rationale_or_texts_are_failures(tmp_path: Path,
                                                                      judge: str) -> None:
    def unmarked(body: dict[str, Any]) -> Reply:  # a judge that ignores the asked format
        if body["model"] in POOL:
            return Reply(text=f"Answer by {body['model']}.")
        return Reply(text="All four answers look fine to me, about a 4.")

    respond = uf_server(rationale=False) if judge == "no rationale" else unmarked
    with FakeOpenAIServer(respond) as server:
        records = uf_run(tmp_path, server, rows=[{"instruction": "Name a colour."}])
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert records == [] and len(failures) == 1
    assert ("no rationale" if judge == "no rationale" else "rated no text 1") in \
        failures[0]["reason"]


def test_ultrafeedback_pairs_the_best_mean_with_a_random_strictly_lower_completion(
        tmp_path: Path) -> None:
    with FakeOpenAIServer(uf_server()) as server:
        records = uf_run(tmp_path, server)
    assert len(records) == 12
    mean = {m: sum(s.values()) / 4 for m, s in SCORES.items()}
    rejected, worst = [], []
    for record in records:
        present = [c["model"] for c in record["completions"]]
        assert record["chosen_score"] == max(mean[m] for m in present) == 4.0
        assert record["chosen_model"] in ("smol-a", "smol-c")  # never smol-b, best in one aspect
        assert record["chosen"] == f"Answer by {record['chosen_model']}."
        assert record["rejected_score"] < record["chosen_score"]  # strictly lower: no tie
        assert record["rejected_model"] not in ("smol-a", "smol-c")
        assert record["rejected"] == f"Answer by {record['rejected_model']}."
        rejected.append(record["rejected_model"])
        worst.append(record["rejected_model"] == min(present, key=mean.__getitem__))
    assert len(set(rejected)) == 3 and not all(worst)  # a random lower one, not the worst


def test_ultrafeedback_exports_dpo_pairs_the_way_trl_reads_them(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    data_utils = pytest.importorskip("trl.data_utils")
    rows = [{"instruction": f"Explain idea {i}."} for i in range(4)]
    with FakeOpenAIServer(uf_server()) as server:
        run(recipe_pipeline("ultrafeedback", server.url), tmp_path / "out",
            write_jsonl(tmp_path / "in.jsonl", rows), formats=("dpo",))
    out = tmp_path / "out"
    records = read_jsonl(out / "records.jsonl")
    dpo = datasets.load_dataset("json", data_files=str(out / "records.dpo.jsonl"))["train"]
    assert dpo.column_names == ["prompt", "chosen", "rejected"] and len(dpo) == 4
    for row, record in zip(dpo, records, strict=True):
        assert data_utils.is_conversational(row)
        assert row["prompt"] == [{"role": "user", "content": record["instruction"]}]
        assert row["chosen"] == [{"role": "assistant", "content": record["chosen"]}]
        assert row["rejected"] == [{"role": "assistant", "content": record["rejected"]}]
        assert record["chosen_model"] in ("smol-a", "smol-c")  # the best, not reversed


# -- HelpSteer -------------------------------------------------------------------------------

HS = load_recipe(registry.recipe_files()["helpsteer"])
ATTRIBUTES = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
PAIRS = [{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
         {"instruction": "Explain photosynthesis.", "input": "", "output": (
             "Plants turn light, water and carbon dioxide into sugar and oxygen. " * 6).strip()},
         {"instruction": "What is 2 + 2?", "output": "5, WRONG on purpose"}]


def expected(response: str) -> dict[str, int]:
    """What the scripted judge gives each attribute of `response` (0-4)."""
    wrong = "WRONG" in response
    return {"helpfulness": 1 if wrong else 3, "correctness": 0 if wrong else 4,
            "coherence": 2 if wrong else 4, "complexity": 3 if len(response) > 100 else 1,
            "verbosity": 4 if len(response) > 100 else 0}


def hs_judge(body: dict[str, Any]) -> Reply:
    text = prompt_of(body)
    rubrics = HS.steps[1].with_["aspects"]
    [aspect] = [a for a, rubric in rubrics.items() if rubric in text]  # one rubric per call
    assert f"Rubric ({aspect})" in text and "a whole number from 0 to 4" in text
    response = text.split("Response:\n", 1)[1].split("\n\nFirst write feedback", 1)[0]
    return Reply(text=f"Feedback: judged for {aspect} on its rubric.\n"
                      f"Score: {expected(response)[aspect]}")


def test_helpsteer_labels_each_attribute_on_its_own_rubric_from_0_to_4(tmp_path: Path) -> None:
    with FakeOpenAIServer(hs_judge) as server:
        run_recipe("helpsteer", server, tmp_path, PAIRS)
        calls = [prompt_of(b) for b in server.calls]
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert len(records) == 3 and len(calls) == 15  # one call per pair and attribute
    assert all("Instruction:\nTranslate to French.\n\nGood morning\n\n" in c
               for c in calls if "Bonjour" in c)  # the judge sees the input too
    by_response = {r["response"]: r for r in records}  # records come in completion order
    for pair in PAIRS:
        record = by_response[pair["output"]]
        assert record["prompt"] == "\n\n".join(
            p for p in (pair["instruction"], pair.get("input")) if p)
        assert record["response"] == pair["output"]
        assert not {"instruction", "input", "output"} & set(record)  # HelpSteer's fields
        want = expected(pair["output"])
        assert {a: record[a] for a in ATTRIBUTES} == want
        assert all(type(record[a]) is int for a in ATTRIBUTES)
        assert all(record["ratings"][a]["rationale"].startswith(f"judged for {a}")
                   for a in ATTRIBUTES)
        label = ",".join(f"{a}:{want[a]}" for a in ATTRIBUTES)
        assert record["label"] == label
        assert record["steerlm"]["conversations"] == [
            {"from": "User", "value": record["prompt"], "label": None},
            {"from": "Assistant", "value": record["response"], "label": label}]
        assert (record["steerlm"]["mask"], record["steerlm"]["type"]) == ("User",
                                                                          "VALUE_TO_TEXT")


def test_helpsteer_rejects_empty_pairs_and_refuses_scores_off_the_scale(tmp_path: Path) -> None:
    def off_scale(body: dict[str, Any]) -> Reply:
        return Reply(text="Feedback: excellent in every way.\nScore: 5")

    rows = [{"instruction": "Say hi.", "input": "", "output": "  "}, PAIRS[0]]
    with FakeOpenAIServer(off_scale) as server:
        run_recipe("helpsteer", server, tmp_path, rows)
    out = tmp_path / "out"
    [reject] = read_jsonl(out / "rejects.jsonl")
    assert (reject["field"], reject["line"]) == ("output", 1) and "empty" in reject["reason"]
    failures = read_jsonl(out / "failures.jsonl")
    assert len(failures) == 1 and "no score" in failures[0]["reason"]
    assert read_jsonl(out / "records.jsonl") == []


# -- DEITA -----------------------------------------------------------------------------------

def deita_judge(body: dict[str, Any]) -> Reply:
    """Complexity from a [c=N] mark in the instruction, quality from [q=N] in the response;
    the complexity prompt must not show the response."""
    text = prompt_of(body)
    if text.endswith("Complexity (1-6):"):
        assert "[q=" not in text, "the complexity prompt shows the response"
        return Reply(text=f"{mark(text, 'c')}\nIt asks this much.")
    assert text.endswith("Quality (1-6):")
    return Reply(text=f"{mark(text, 'q')}\nIt answers this well.")


def mark(text: str, kind: str) -> str:
    found = re.search(rf"\[{kind}=(\d)\]", text)
    assert found, text
    return found.group(1)


def row(instruction: str, c: int, output: str, q: int) -> dict[str, str]:
    return {"instruction": f"{instruction} [c={c}]", "input": "", "output": f"{output} [q={q}]"}


DEITA_ROWS = [
    row("Give three tips for staying focused while working from home.", 6, "Tips.", 1),  # 6
    row("Rewrite the sentence in the passive voice.", 4, "Passive form.", 5),  # 20
    row("Convert the temperature from Celsius to Fahrenheit.", 3, "Fahrenheit value.", 3),  # 9
    row("Rewrite this sentence in passive voice.", 4, "Passive form.", 4),  # 16, near-dup of 1
    row("Explain the difference between weather and climate.", 2, "Weather is today.", 4),  # 8
    row("Write a haiku about autumn leaves.", 2, "Leaves fall.", 2),  # 4
]


def test_deita_scores_complexity_on_the_instruction_and_quality_on_the_response(
        tmp_path: Path) -> None:
    with FakeOpenAIServer(deita_judge) as server:
        run_recipe("deita", server, tmp_path, DEITA_ROWS)
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    scored = {r["instruction"]: (r["complexity"], r["quality"], r["evol_score"])
              for r in records}
    assert scored[DEITA_ROWS[0]["instruction"]] == (6, 1, 6.0)
    assert scored[DEITA_ROWS[2]["instruction"]] == (3, 3, 9.0)  # the product, not the sum
    assert all(c * q == e for c, q, e in scored.values())


def test_deita_selects_best_scores_first_skipping_near_duplicates_within_the_budget(
        tmp_path: Path) -> None:
    with FakeOpenAIServer(deita_judge) as server:
        run_recipe("deita", server, tmp_path, DEITA_ROWS, sets={"select": {"budget": 3}})
    out = tmp_path / "out"
    records = read_jsonl(out / "records.jsonl")
    # evol scores 20, 16 (a near-duplicate of 20), 9, 8, 6, 4: the near-duplicate is
    # skipped, the budget of 3 stops at 8; ordered by (complexity + quality) it would differ
    assert [r["evol_score"] for r in records] == [20.0, 9.0, 8.0]
    assert records[0]["nearest_distance"] is None
    assert all(r["nearest_distance"] >= 0.1 for r in records[1:])
    dropped = {d["record"]["instruction"]: d for d in read_jsonl(out / "dropped.jsonl")}
    near = dropped[DEITA_ROWS[3]["instruction"]]
    assert near["reason"] == "too close to a selected record"
    assert records[0]["_meta"]["id"] in near["detail"]
    assert [dropped[DEITA_ROWS[i]["instruction"]]["reason"] for i in (0, 5)] == [
        "over budget"] * 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"]["select"]["dropped"] == {"too close to a selected record": 1,
                                                      "over budget": 2}


def test_deita_rejects_records_without_scores() -> None:
    ctx = a_context()
    step = DeitaSelect(budget=2)
    assert guarded(step.observe, {"complexity": 3, "quality": "high"}, ctx) == []
    assert guarded(step.observe, {"complexity": True, "quality": 2}, ctx) == []
    assert [(kind, r["field"]) for kind, r in ctx.side.rows] == [  # type: ignore[attr-defined]
        ("rejects", "quality"), ("rejects", "complexity")]
    assert list(step.finish(ctx)) == []


def test_shipped_prompts_are_diverse_instructions() -> None:
    rows = [json.loads(line) for line in
            data_file("ultrafeedback_prompts.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and len({r["kind"] for r in rows}) == 12
    assert all(r["instruction"].strip() for r in rows)


def test_a_failed_verdict_waits_for_the_other_calls_of_its_record() -> None:
    """judge-rate and completions gather their calls with `settled`: when one fails, the
    others finish before the record's failure is reported, so no call (e.g. a llama.cpp
    generation on a worker thread) outlives the run that closes its backend."""
    finished: list[str] = []

    async def slow() -> str:
        await asyncio.sleep(0.05)
        finished.append("slow")
        return "slow"

    async def broken() -> str:
        raise ParseError("no score", raw=["?"])

    async def main() -> None:
        with pytest.raises(ParseError):
            await settled(slow(), broken())
        assert finished == ["slow"]
        assert await settled(slow(), slow()) == ["slow", "slow"]

    asyncio.run(main())
