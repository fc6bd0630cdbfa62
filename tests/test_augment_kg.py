"""kg-verbalize and kg-qa: triples grouped by subject; only output grounded in them is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl
from tests.recipe_helpers import manifest, prompt_of, run_recipe

KENYA = [{"subject": "Kenya", "relation": "has the capital", "object": "Nairobi"},
         {"subject": "Kenya", "relation": "has the official language", "object": "Swahili"}]
PERU = [{"subject": "Peru", "relation": "has the capital", "object": "Lima"}]
QA_REPLY = "\n".join([
    "Question: What is the capital of Kenya?", "Answer: The capital of Kenya is Nairobi.",
    "Question: Which city is the capital of Kenya?", "Answer: It is Mombasa.",
    "Question: Is Nairobi the capital of Kenya?", "Answer: Yes, Nairobi is.",
    "Question: What language is official there?", "Answer: Swahili.",
    "Question: What is the capital of Kenya?", "Answer: Nairobi.",
    "Question: What official language does Kenya have?", "Answer: Kenya's is Swahili.",
])


def outputs(tmp: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp / "out" / "records.jsonl")


def by_subject(replies: dict[str, str], asked: list[str]) -> Any:
    def answer(body: dict[str, Any]) -> Reply:
        text = prompt_of(body)
        asked.append(text)
        subject = next(s for s in replies if f"Facts about {s}:" in text)
        return Reply(text=replies[subject])
    return answer


def test_only_qa_pairs_grounded_in_the_triples_are_kept(tmp_path: Path) -> None:
    asked: list[str] = []
    replies = {"Kenya": QA_REPLY,
               "Peru": "Question: What is the capital of Peru?\nAnswer: Lima."}
    with FakeOpenAIServer(by_subject(replies, asked)) as server:
        run_recipe("kg-qa", server, tmp_path, [KENYA[0], PERU[0], KENYA[1]])
    kept = {(r["question"], r["evidence"][0]["object"]) for r in outputs(tmp_path)}
    assert kept == {("What is the capital of Kenya?", "Nairobi"),
                    ("What official language does Kenya have?", "Swahili"),
                    ("What is the capital of Peru?", "Lima")}
    dropped = sorted(d["reason"] for d in read_jsonl(tmp_path / "out" / "dropped.jsonl"))
    assert dropped == ["answer states no fact of the subject", "duplicate question",
                       "question does not name the subject", "question gives the answer away"]
    # one request per subject, holding that subject's facts and no other's
    assert len(asked) == 2
    kenya = next(a for a in asked if "Facts about Kenya:" in a)
    assert "(Kenya; has the capital; Nairobi)" in kenya and "Swahili" in kenya
    assert "Lima" not in kenya


def test_a_model_text_must_state_every_fact(tmp_path: Path) -> None:
    replies = {"Kenya": "Kenya is a country whose capital is Nairobi.",
               "Peru": "The capital of Peru is Lima."}
    with FakeOpenAIServer(by_subject(replies, [])) as server:
        run_recipe("kg-to-text", server, tmp_path, [*KENYA, *PERU])
    assert [(r["subject"], r["text"]) for r in outputs(tmp_path)] == [
        ("Peru", "The capital of Peru is Lima.")]
    [drop] = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert (drop["reason"], drop["detail"]) == ("ungrounded text", "misses 'Swahili'")


def test_template_texts_need_no_model(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        run_recipe("kg-to-text", server, tmp_path, [*KENYA, *PERU],
                   sets={"verbalize": {"mode": "template"}})
        assert server.calls == []
    assert [r["text"] for r in outputs(tmp_path)] == [
        "Kenya has the capital Nairobi. Kenya has the official language Swahili.",
        "Peru has the capital Lima."]
    assert manifest(tmp_path)["steps"]["verbalize"]["out"] == 2


def test_malformed_triples_are_rejects_naming_file_line_and_field(tmp_path: Path) -> None:
    tsv = tmp_path / "facts.tsv"
    tsv.write_text("subject\trelation\tobject\nPeru\thas the capital\tLima\n"
                   "Peru\thas the capital\n\tflows into\tthe sea\nPeru\thas the capital\tLima\n",
                   encoding="utf-8")
    rows = [{"subject": "Kenya", "relation": "has the capital", "object": "  "},
            {"subject": "Kenya", "relation": "has the capital"}]
    with FakeOpenAIServer() as server:
        run_recipe("kg-to-text", server, tmp_path, rows,
                   sets={"verbalize": {"mode": "template", "triples_file": str(tsv)}})
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    found = sorted((Path(r["file"]).name, r["line"], r["field"]) for r in rejects)
    assert found == [("facts.tsv", 3, None), ("facts.tsv", 4, "subject"),
                     ("in.jsonl", 1, "object"), ("in.jsonl", 2, "object")]
    assert "3 tab-separated columns" in next(r["reason"] for r in rejects if r["line"] == 3
                                             and r["file"].endswith("tsv"))
    assert [r["reason"] for r in read_jsonl(tmp_path / "out" / "dropped.jsonl")] == [
        "repeated triple"]
    assert [r["text"] for r in outputs(tmp_path)] == ["Peru has the capital Lima."]


def test_a_subject_with_more_than_max_triples_fills_several_groups(tmp_path: Path) -> None:
    rows = [{"subject": "Chile", "relation": f"has fact {i}", "object": f"value {i}"}
            for i in range(5)]
    with FakeOpenAIServer() as server:
        run_recipe("kg-to-text", server, tmp_path, rows,
                   sets={"verbalize": {"mode": "template", "max_triples": 2}})
    made = outputs(tmp_path)
    assert [len(r["triples"]) for r in made] == [2, 2, 1]
    covered = [t["object"] for r in made for t in r["triples"]]
    assert covered == [f"value {i}" for i in range(5)]  # every triple, each once, in order
    assert all(r["subject"] == "Chile" for r in made)
    assert len({r["_meta"]["id"] for r in made}) == 3
    again = tmp_path / "again"
    again.mkdir()
    with FakeOpenAIServer() as server:
        run_recipe("kg-to-text", server, again, rows,
                   sets={"verbalize": {"mode": "template", "max_triples": 2}})
    assert [r["_meta"]["id"] for r in outputs(again)] == [r["_meta"]["id"] for r in made]
