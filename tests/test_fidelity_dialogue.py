"""Orca, Orca 2, Baize and UltraChat against their papers: each test fails when the mechanism
it names is removed (system messages per task type, prompt erasure, one-call transcripts,
UltraChat's three sectors, 3-7 rounds)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from synthaug.errors import ConfigError
from synthaug.shapes import to_sft
from synthaug.steps.generate.orca import GENERIC_SYSTEM, SystemMessages
from synthaug.steps.generate.sampling import load_data
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl
from tests.recipe_helpers import prompt_of, recipe_pipeline, run_recipe

# Orca (arXiv:2306.02707), Figure 6: the system messages (by their number in Table 2) each
# FLAN collection draws from; 8 and 10 speak of multiple-choice questions
FIGURE_6 = {"cot": {6, 11, 16}, "niv2": {1, 2, 5, 7, 9, 12, 13, 14, 15},
            "t0": {1, 2, 3, 5, 7}, "flan2021": {3, 4, 7}, "flan2021-mc": {3, 4, 7, 8, 10}}


def _system_of(body: dict[str, Any]) -> str:
    first = body["messages"][0]
    return str(first["content"]) if first["role"] == "system" else ""


def _user_of(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


# -- Orca: system messages per task type ---------------------------------------------------

def test_orca_pool_follows_figure_6() -> None:
    pool = load_data("orca_system_messages.jsonl")
    assert [row["id"] for row in pool] == list(range(1, 17)) and pool[0]["system"] == ""
    by_type: dict[str, set[int]] = {}
    for row in pool:
        for kind in row["task_types"]:
            by_type.setdefault(kind, set()).add(row["id"])
    assert by_type == FIGURE_6


def test_orca_draws_each_system_message_from_its_collections_set(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda body: Reply(text=f"explained: {_user_of(body)}")
    pool = load_data("orca_system_messages.jsonl")
    allowed = {kind: {row["system"] for row in pool if kind in row["task_types"]}
               for kind in FIGURE_6}
    rows = [{"instruction": f"{kind} task {i}", "input": "", "collection": kind}
            for kind in FIGURE_6 for i in range(12)]
    run_recipe("orca", server, tmp_path, rows)
    sent = {_user_of(c): _system_of(c) for c in server.calls}
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert len(out) == len(rows)
    for record in out:
        kind = record["collection"]
        assert sent[record["instruction"]] in allowed[kind], record["instruction"]
        assert record["system_message"] == sent[record["instruction"]]
    for kind in FIGURE_6:  # a draw, not one fixed message per collection
        assert len({sent[r["instruction"]] for r in rows if r["collection"] == kind}) > 1
    # the training record keeps the message that produced the explanation (Orca 1)
    record = next(r for r in out if r["system_message"])
    assert record["messages"][0] == {"role": "system", "content": record["system_message"]}
    assert record["messages"][-1]["content"] == f"explained: {record['instruction']}"


def test_orca_draw_is_seeded(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda body: Reply(text="ok")
    rows = [{"instruction": f"task {i}", "input": "", "collection": "niv2"} for i in range(20)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)

    def strategies(out: str, seed: int) -> dict[str, str]:
        pipeline = recipe_pipeline("orca", server.url)
        pipeline.seed = seed
        run(pipeline, tmp_path / out, data)
        # records come in completion order: compare the draw per task
        return {r["instruction"]: r["strategy"]
                for r in read_jsonl(tmp_path / out / "records.jsonl")}

    first = strategies("a", 0)
    assert strategies("b", 0) == first and strategies("c", 1) != first


def test_orca_rejects_records_without_a_known_task_type(server: FakeOpenAIServer,
                                                        tmp_path: Path) -> None:
    server.responder = lambda body: Reply(text="ok")
    rows = [{"instruction": "no type", "input": ""},
            {"instruction": "odd type", "input": "", "collection": "poetry"},
            {"instruction": "typed", "input": "", "collection": "cot"}]
    run_recipe("orca", server, tmp_path, rows)
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert {(r["record"]["instruction"], r["field"]) for r in rejects} == {
        ("no type", "collection"), ("odd type", "collection")}
    assert any("poetry" in r["reason"] for r in rejects)
    assert [r["instruction"] for r in read_jsonl(tmp_path / "out" / "records.jsonl")] == [
        "typed"]
    # a default type serves records that carry none; an unknown default fails up front
    step = SystemMessages(type_field="collection", default_type="cot")
    assert step.allowed["cot"] and step.options.default_type == "cot"
    with pytest.raises(ConfigError, match="default_type"):
        SystemMessages(type_field="collection", default_type="poetry")



def test_orca_task_type_must_be_a_string_and_null_takes_the_default(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda body: Reply(text="ok")
    rows = [{"instruction": "null type", "input": "", "collection": None},
            {"instruction": "list type", "input": "", "collection": ["cot"]},
            {"instruction": "number type", "input": "", "collection": 3},
            {"instruction": "typed", "input": "", "collection": "niv2"}]
    run_recipe("orca", server, tmp_path, rows, sets={"strategy": {"default_type": "cot"}})
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert [(r["instruction"], r["collection"]) for r in out] == [("null type", "cot"),
                                                                  ("typed", "niv2")]
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert sorted((r["record"]["instruction"], r["field"]) for r in rejects) == [
        ("list type", "collection"), ("number type", "collection")]
    assert all("must be a string" in r["reason"] for r in rejects)


def test_orca_pool_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"strategy": "a", "system": "x", "task_types": ["t"]}\n'
                   '{"strategy": "b", "system": "y"}\n')
    with pytest.raises(ConfigError, match="line 2") as caught:
        SystemMessages(pool=str(bad))
    assert caught.value.field == "task_types"


# -- Orca 2: prompt erasure -----------------------------------------------------------------

def test_orca_2_generates_with_the_strategy_but_exports_a_generic_system(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda body: Reply(text=f"answer to {_user_of(body)}")
    pool = load_data("orca_2_system_messages.jsonl")
    strategy_text = {row["strategy"]: row["system"] for row in pool}
    rows = [{"instruction": f"{kind} task {i}", "input": "", "category": kind}
            for kind in ("math", "reading", "knowledge") for i in range(4)]
    pipeline = recipe_pipeline("orca-2", server.url)
    run(pipeline, tmp_path / "out", write_jsonl(tmp_path / "in.jsonl", rows), formats=("sft",))
    sent = {_user_of(c): _system_of(c) for c in server.calls}
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    exported = read_jsonl(tmp_path / "out" / "records.sft.jsonl")
    assert len(out) == len(exported) == len(rows)
    for record, shaped in zip(out, exported, strict=True):
        used = sent[record["instruction"]]
        # generated under the strategy its category allows ...
        assert used == strategy_text[record["strategy"]]
        assert record["category"] in next(r["task_types"] for r in pool
                                          if r["strategy"] == record["strategy"])
        # ... trained with the strategy erased
        turns = shaped["messages"]
        assert turns[0] == {"role": "system", "content": GENERIC_SYSTEM}
        assert all(used not in turn["content"] for turn in turns)
        assert turns[1:] == [{"role": "user", "content": record["instruction"]},
                             {"role": "assistant",
                              "content": f"answer to {record['instruction']}"}]
    maths = [r for r in out if r["category"] == "math"]
    assert {r["strategy"] for r in maths} == {"step-by-step"}  # the only one math allows


def test_orca_2_records_keep_the_strategy_text_out_of_their_system_message(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda body: Reply(text=f"answer to {_user_of(body)}")
    rows = [{"instruction": f"{kind} task", "input": "", "category": kind}
            for kind in ("math", "reading", "knowledge")]
    run_recipe("orca-2", server, tmp_path, rows)
    sent = {_user_of(c): _system_of(c) for c in server.calls}
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert len(out) == len(rows)
    for record in out:
        used = sent[record["instruction"]]
        assert used and used != GENERIC_SYSTEM
        # records.jsonl: the erased message is the record's system message; the one that
        # generated the response is kept apart, under its own name
        assert record["system_message"] == GENERIC_SYSTEM
        assert record["generation_system_message"] == used
        assert [k for k, v in record.items() if v == used] == ["generation_system_message"]
        # an export rebuilt from the fields (no `messages`) shows the generic message too
        fields = {k: v for k, v in record.items() if k != "messages"}
        shaped = to_sft(fields)
        assert shaped is not None
        assert shaped["messages"][0] == {"role": "system", "content": GENERIC_SYSTEM}


def test_orca_1_export_keeps_the_generating_system_message(server: FakeOpenAIServer,
                                                           tmp_path: Path) -> None:
    server.responder = lambda body: Reply(text="because ...")
    rows = [{"instruction": f"q{i}", "input": "ctx", "collection": "cot"} for i in range(3)]
    pipeline = recipe_pipeline("orca", server.url)
    run(pipeline, tmp_path / "out", write_jsonl(tmp_path / "in.jsonl", rows), formats=("sft",))
    sent = {_user_of(c): _system_of(c) for c in server.calls}
    for shaped in read_jsonl(tmp_path / "out" / "records.sft.jsonl"):
        system, user, _ = shaped["messages"]
        assert system["content"] == sent[user["content"]] != GENERIC_SYSTEM
        assert user["content"].endswith("\n\nctx")


# -- Baize: one call writes both sides ------------------------------------------------------

TRANSCRIPTS = {
    "two exchanges": "[|Human|] Why is the sky blue?\n[|AI|] Rayleigh scattering.\n"
                     "[|Human|] Does it change at sunset?\n[|AI|] Yes, it reddens.\n"
                     "[|Human|] Thanks!",
    "greeting again": "[|Human|] Hello!\n[|AI|] Hi! How can I help you?\n"
                      "[|Human|] What is rust?\n[|AI|] Iron oxide.\n"
                      "[|Human|] Can I stop it?\n[|AI|] Paint or oil the metal.",
    "one exchange": "[|Human|] What is rust?\n[|AI|] Iron oxide.",
    "no markers": "Human: What is rust? AI: Iron oxide. Human: ok",
    "out of order": "[|Human|] A?\n[|AI|] B.\n[|AI|] C.\n[|Human|] D?\n[|AI|] E.",
    "cut off": "[|Human|] One?\n[|AI|] 1.\n[|Human|] Two?\n[|AI|] 2.\n"
               "[|Human|] Three?\n[|AI|] 3 is the numb",
}


def _baize_reply(body: dict[str, Any]) -> Reply:
    seed = next(s for s in TRANSCRIPTS if f'"{s}"' in prompt_of(body))
    return Reply(text=TRANSCRIPTS[seed], finish_reason="length" if seed == "cut off" else "stop")


def test_baize_transcript_is_one_call_parsed_into_turns(server: FakeOpenAIServer,
                                                       tmp_path: Path) -> None:
    server.responder = _baize_reply
    run_recipe("baize", server, tmp_path, [{"question": s} for s in TRANSCRIPTS])
    assert len(server.calls) == len(TRANSCRIPTS)  # one generation per dialogue
    prompt = prompt_of(server.calls[0])
    assert "[|Human|]" in prompt and "[|AI|]" in prompt and "both sides" in prompt
    out = {r["question"]: r for r in read_jsonl(tmp_path / "out" / "records.jsonl")}
    assert set(out) == {"two exchanges", "greeting again", "cut off"}
    assert out["two exchanges"]["messages"] == [
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "Rayleigh scattering."},
        {"role": "user", "content": "Does it change at sunset?"},
        {"role": "assistant", "content": "Yes, it reddens."}]  # the unanswered turn is cut
    assert out["greeting again"]["messages"][0]["content"] == "What is rust?"
    cut = out["cut off"]
    assert [m["content"] for m in cut["messages"]] == ["One?", "1.", "Two?", "2."]
    assert cut["stop_reason"] == "cut at the token limit"


def test_baize_drops_short_and_malformed_transcripts_with_reasons(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = _baize_reply
    run_recipe("baize", server, tmp_path, [{"question": s} for s in TRANSCRIPTS])
    dropped = {d["record"]["question"]: d for d in read_jsonl(tmp_path / "out" / "dropped.jsonl")}
    assert {k: d["reason"] for k, d in dropped.items()} == {
        "one exchange": "one-turn transcript",
        "no markers": "no [|Human|]/[|AI|] exchange",
        "out of order": "one-turn transcript"}
    assert dropped["out of order"]["detail"] == "turns out of order"
    assert dropped["no markers"]["record"]["transcript"] == TRANSCRIPTS["no markers"]


# -- UltraChat: three sectors, then two agents ---------------------------------------------

DOCUMENT = "The old lighthouse was switched off in 1998 and is now a small museum."


def _ultrachat_reply(body: dict[str, Any]) -> Reply:
    text = prompt_of(body)
    if "subtopics of the area" in text:
        return Reply(text="1. volcanoes\n2. glaciers\n3. deserts")
    if "questions a curious person" in text:
        topic = next(t for t in ("volcanoes", "glaciers", "deserts") if t in text)
        return Reply(text=f"- Why do {topic} form?\n- Where are {topic} found?")
    if "to write a haiku" in text:
        return Reply(text="1. Write a haiku about rain for a child.\n2. Write a haiku on trains.")
    if "A user has this text" in text:
        return Reply(text="1. Summarize the text in one line.\n2. Continue the text.")
    if "What you want from it" in text:
        return Reply(text="[END]")
    return Reply(text="An assistant answer.")


def test_ultrachat_three_sectors_seed_the_dialogues(server: FakeOpenAIServer,
                                                    tmp_path: Path) -> None:
    server.responder = _ultrachat_reply
    rows = [{"sector": "world", "meta_topic": "Earth science"},
            {"sector": "writing", "material": "haiku"},
            {"document": DOCUMENT}]  # the sector follows from the seed field
    run_recipe("ultrachat", server, tmp_path, rows,
               sets={"openings": {"subtopics": 2, "openings": 1}})
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    by_sector: dict[str, list[dict[str, Any]]] = {}
    for record in out:
        by_sector.setdefault(record["sector"], []).append(record)
        assert record["messages"][0] == {"role": "user", "content": record["question"]}
        assert record["messages"][1]["role"] == "assistant"
    world, writing, assistance = (by_sector[s] for s in ("world", "writing", "assistance"))
    assert len(world) == 2 and len({r["topic"] for r in world}) == 2  # two subtopics
    for record in world:
        assert record["topic"] in ("volcanoes", "glaciers", "deserts")
        assert record["question"] in (f"Why do {record['topic']} form?",
                                      f"Where are {record['topic']} found?")
    [wrote] = writing
    assert wrote["topic"] == "haiku" and wrote["question"] in (
        "Write a haiku about rain for a child.", "Write a haiku on trains.")
    [helped] = assistance
    assert helped["instruction"] in ("Summarize the text in one line.", "Continue the text.")
    assert DOCUMENT in helped["question"] and helped["instruction"] in helped["question"]
    asked = [prompt_of(c) for c in server.calls if "A user has this text" in prompt_of(c)]
    assert len(asked) == 1 and DOCUMENT in asked[0]


def test_ultrachat_assistance_templates_vary(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = _ultrachat_reply
    rows = [{"document": f"{DOCUMENT} Note {i}."} for i in range(12)]
    run_recipe("ultrachat", server, tmp_path, rows, sets={"dialogue": {"turns": 1}})
    openings = [r["question"] for r in read_jsonl(tmp_path / "out" / "records.jsonl")]
    assert len(openings) == 12
    starts = {o.split(DOCUMENT)[0] for o in openings}  # what comes before the document
    assert len(starts) > 1


def test_ultrachat_rejects_seeds_without_one_sector(server: FakeOpenAIServer,
                                                    tmp_path: Path) -> None:
    server.responder = _ultrachat_reply
    rows = [{"sector": "poetry", "material": "ode"},
            {"meta_topic": "Space", "material": "ode"},
            {"material": "haiku"}]
    run_recipe("ultrachat", server, tmp_path, rows, sets={"dialogue": {"turns": 1}})
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert sorted(r["field"] for r in rejects) == ["sector", "sector"]
    assert any("poetry" in r["reason"] for r in rejects)
    assert [r["sector"] for r in read_jsonl(tmp_path / "out" / "records.jsonl")] == ["writing"]


def test_ultrachat_rounds_are_drawn_between_three_and_seven(server: FakeOpenAIServer,
                                                            tmp_path: Path) -> None:
    numbers = itertools.count()
    server.responder = lambda body: Reply(text=f"message {next(numbers)}")  # never repeated
    rows = [{"question": f"Question {i}?", "topic": "anything"} for i in range(16)]
    pipeline = recipe_pipeline("ultrachat", server.url)
    pipeline.steps = pipeline.steps[1:]  # the dialogue step, from opening questions
    run(pipeline, tmp_path / "out", write_jsonl(tmp_path / "in.jsonl", rows))
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    rounds = [sum(m["role"] == "assistant" for m in r["messages"]) for r in out]
    assert len(rounds) == 16 and all(3 <= n <= 7 for n in rounds) and len(set(rounds)) > 2
    assert {r["stop_reason"] for r in out} == {"turn limit"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
