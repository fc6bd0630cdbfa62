"""Decontamination: planted benchmark items are found and named; the judge decides candidates."""

from __future__ import annotations

import json
from pathlib import Path

from synthaug import Pipeline
from synthaug.pipeline import BackendSpec
from synthaug.steps.curate.decontaminate import Decontaminate
from synthaug.steps.curate.plant import planted
from synthaug.steps.generate.self_instruct import load_seed_tasks
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl


def clean_rows() -> list[dict[str, str]]:
    return [{"text": f"{t['instruction']}\n{i['input']}\n{i['output']}", "kind": "clean"}
            for t in load_seed_tasks() for i in t["instances"]]


def test_every_verbatim_plant_is_found_and_named(tmp_path: Path) -> None:
    plants = planted()
    data = write_jsonl(tmp_path / "in.jsonl", clean_rows() + plants)
    run(Pipeline.from_steps(Decontaminate(embedder=None)), tmp_path / "out", data)
    kept = read_jsonl(tmp_path / "out" / "records.jsonl")
    dropped = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert all(r["kind"] == "clean" or r["kind"] == "edited" for r in kept)
    assert sum(r["kind"] == "clean" for r in kept) == len(clean_rows())
    verbatim = [d for d in dropped if d["record"]["kind"] == "verbatim"]
    assert len(verbatim) == sum(p["kind"] == "verbatim" for p in plants) == 30
    for row in verbatim:
        finding = row["record"]["_meta"]["contamination"]
        assert (finding["benchmark"], finding["item"], finding["method"]) == (
            row["record"]["benchmark"], row["record"]["item"], "ngram")
        assert row["reason"] == f"contaminated ({finding['benchmark']})"


def test_flag_mode_keeps_and_marks(tmp_path: Path) -> None:
    plants = [p for p in planted(gsm8k=2, humaneval=0) if p["kind"] == "verbatim"]
    data = write_jsonl(tmp_path / "in.jsonl", clean_rows()[:5] + plants)
    run(Pipeline.from_steps(Decontaminate(embedder=None, action="flag")), tmp_path / "o", data)
    flagged = [r for r in read_jsonl(tmp_path / "o" / "records.jsonl") if "contamination" in r]
    assert len(flagged) == 2 and all(r["contamination"]["benchmark"] == "gsm8k" for r in flagged)


def test_the_judge_decides_embedding_candidates(server: FakeOpenAIServer,
                                                tmp_path: Path) -> None:
    edited = [p for p in planted(gsm8k=2, humaneval=0) if p["kind"] == "edited"]
    server.responder = lambda body: Reply(
        text="yes" if edited[0]["text"] in body["messages"][0]["content"] else "no")
    data = write_jsonl(tmp_path / "in.jsonl", edited)
    step = Decontaminate(benchmarks=["gsm8k"], ngram=50, judge="judge",
                         candidate_threshold=0.5)
    backend = BackendSpec(use="openai", with_={"base_url": server.url, "model": "j"})
    run(Pipeline.from_steps(step, backends={"judge": backend}), tmp_path / "out", data)
    [dropped] = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert dropped["record"]["_meta"]["contamination"]["method"] == "judge"
    assert dropped["record"]["_meta"]["contamination"]["item"] == edited[0]["item"]
    assert len(server.calls) == 2  # both were candidates; the judge cleared the second
    assert [r["text"] for r in read_jsonl(tmp_path / "out" / "records.jsonl")] == [
        edited[1]["text"]]


def test_a_user_benchmark_file(tmp_path: Path) -> None:
    bench = tmp_path / "mybench.jsonl"
    bench.write_text(json.dumps({"id": "q1", "question": "What colour is the secret "
                                 "zebra that lives under the old bridge in town?"}) + "\n")
    data = write_jsonl(tmp_path / "in.jsonl", [
        {"text": "Tell me: what colour is the secret zebra that lives under the old bridge "
                 "in town?"}, {"text": "Unrelated."}])
    run(Pipeline.from_steps(Decontaminate(benchmarks=[str(bench)], embedder=None, ngram=8)),
        tmp_path / "o", data)
    [row] = read_jsonl(tmp_path / "o" / "dropped.jsonl")
    assert row["record"]["_meta"]["contamination"]["item"] == "q1"
