"""co-annotate (CoAnnotating): uncertainty routing by threshold and by human budget, the Label
Studio hand-off (tasks with the model's label as a pre-annotation, the labeling config), the
merge of people's labels back, and the agreement statistics; against a real HTTP server with
scripted labels."""

from __future__ import annotations

import json
import math
import random
import re
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from synthaug.cli import app
from synthaug.errors import ConfigError
from synthaug.labelstudio import merge
from synthaug.measure.agreement import cohen_kappa, fleiss_kappa, label_agreement
from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.steps.augment.coannotate import CoAnnotate, routed
from synthaug.steps.augment.label import load_schema
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl, run, write_jsonl

LABELS = {"positive": "pleased", "negative": "unhappy", "neutral": "no feeling"}
# the k = 4 answers each text gets; entropies 0, 0.811, 1.5, 0, 0.811, 2.0 bits
ANSWERS = {
    "A sunny day.": ["positive"] * 4,
    "Bus was late.": ["positive", "negative", "positive", "positive"],
    "It is a chair.": ["positive", "negative", "neutral", "negative"],
    "Awful food.": ["negative"] * 4,
    "Meeting at 3.": ["neutral", "positive", "neutral", "neutral"],
    "Hmm, well.": ["positive", "negative", "neutral", "happy"],
}
TEXTS = list(ANSWERS)


def entropy(*counts: int) -> float:
    total = sum(counts)
    return round(-sum(c / total * math.log2(c / total) for c in counts), 4)


class Labeler:
    """Answers each labeling request from ANSWERS, by the text in its prompt."""

    def __init__(self) -> None:
        self.given: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        text = next(t for t in TEXTS if f"Text:\n{t}\n" in prompt)
        with self.lock:
            answer = ANSWERS[text][self.given[text]]
            self.given[text] += 1
        return f"Label: {answer}"


@pytest.fixture
def labeler() -> Any:
    with FakeOpenAIServer(Labeler()) as srv:
        yield srv


def pipeline(tmp: Path, url: str, seed: int = 0, concurrency: int = 4,
             **route: Any) -> Pipeline:
    recipe = {"name": "coannotate-test", "input": "required", "seed": seed, "steps": [
        {"use": "llm-label", "name": "label",
         "with": {"labels": LABELS, "k": 4, "structured": False}},
        {"use": "co-annotate", "name": "route", "with": {"labels": LABELS, **route}}],
        "backends": {"default": {"use": "openai", "with": {
            "base_url": url, "model": "labeler-x", "concurrency": concurrency}}}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Pipeline.from_recipe(*resolve_recipe(str(path)))


def route(tmp: Path, url: str, **options: Any) -> dict[str, dict[str, Any]]:
    """Label and route the six texts; the output records by text."""
    data = write_jsonl(tmp / "in.jsonl", [{"text": t} for t in TEXTS])
    run(pipeline(tmp, url, **options), tmp / "out", data)
    return {r["text"]: r for r in read_jsonl(tmp / "out" / "records.jsonl")}


def humans(records: dict[str, dict[str, Any]]) -> set[str]:
    return {text for text, r in records.items() if r["route"] == "human"}


def test_a_budget_sends_the_most_uncertain_records_to_people(tmp_path: Path,
                                                             labeler: FakeOpenAIServer) -> None:
    records = route(tmp_path, labeler.url, budget=2)
    assert len(records) == 6, "every record goes on, routed or not"
    assert humans(records) == {"Hmm, well.", "It is a chair."}
    assert records["Hmm, well."]["uncertainty"] == entropy(1, 1, 1, 1)
    assert records["It is a chair."]["uncertainty"] == entropy(2, 1, 1)
    assert records["A sunny day."]["uncertainty"] == 0.0
    assert all(r["label"] for r in records.values()), "routed records keep the model label"
    tasks = json.loads((tmp_path / "out" / "annotation" / "tasks.json").read_text())
    assert [t["data"]["text"] for t in tasks] == ["Hmm, well.", "It is a chair."], \
        "most uncertain first"
    chair = records["It is a chair."]
    [prediction] = tasks[1]["predictions"]
    assert tasks[1]["data"]["synthaug_id"] == chair["_meta"]["id"]
    assert prediction["model_version"] == "labeler-x"
    assert prediction["score"] == chair["confidence"]["vote_share"] == 0.5
    assert prediction["result"] == [{"from_name": "label", "to_name": "text",
                                     "type": "choices", "value": {"choices": ["negative"]}}]
    config = ET.fromstring((tmp_path / "out" / "annotation" / "config.xml").read_text())
    choices = config.find("Choices")
    assert choices is not None and choices.get("choice") == "single-radio"
    assert [c.get("value") for c in choices] == list(LABELS)
    assert config.find("Text").get("value") == "$text"  # type: ignore[union-attr]


def test_a_threshold_routes_every_record_above_it(tmp_path: Path,
                                                  labeler: FakeOpenAIServer) -> None:
    records = route(tmp_path, labeler.url, threshold=0.5)
    assert humans(records) == {"Bus was late.", "It is a chair.", "Meeting at 3.",
                               "Hmm, well."}


def test_threshold_and_budget_together_cap_the_routed_records(
        tmp_path: Path, labeler: FakeOpenAIServer) -> None:
    records = route(tmp_path, labeler.url, threshold=0.5, budget_share=0.5)
    routed_texts = humans(records)
    assert len(routed_texts) == 3 and {"Hmm, well.", "It is a chair."} < routed_texts


def test_vote_share_uncertainty_is_one_minus_the_share(tmp_path: Path,
                                                       labeler: FakeOpenAIServer) -> None:
    records = route(tmp_path, labeler.url, uncertainty="vote_share", budget=1)
    assert humans(records) == {"Hmm, well."}  # 1/4 of the votes: the least sure
    assert records["Bus was late."]["uncertainty"] == 0.25


def test_routing_helper_orders_by_uncertainty_and_breaks_ties_by_the_draw() -> None:
    values = [0.2, 1.5, 0.8, 0.8, math.inf]
    assert routed(values, [0.0] * 5, None, 2) == {4, 1}
    assert routed(values, [0.0, 0.0, 0.9, 0.1, 0.0], None, 4) == {4, 1, 3, 2}
    assert routed(values, [0.0, 0.0, 0.9, 0.1, 0.0], None, 3) == {4, 1, 3}
    assert routed(values, [0.0] * 5, 0.8, None) == {1, 4}
    assert routed(values, [0.0] * 5, 0.1, 0) == set()


def test_a_budget_that_cuts_through_a_tie_draws_by_seed_not_stream_order(
        tmp_path: Path) -> None:
    texts = [f"Review number {i}." for i in range(12)]

    def routed_in(out: Path, seed: int) -> list[int]:
        # one request at a time: the stream reaches co-annotate in input order
        pipe = pipeline(tmp_path, server.url, seed=seed, concurrency=1, budget=4)
        run(pipe, out, write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts]))
        records = read_jsonl(out / "records.jsonl")
        assert [r["text"] for r in records] == texts, "emitted in input order"
        assert {r["uncertainty"] for r in records} == {0.0}, "every record tied"
        return [i for i, r in enumerate(records) if r["route"] == "human"]

    with FakeOpenAIServer(lambda body: "Label: positive") as server:
        first = routed_in(tmp_path / "a", 0)
        again = routed_in(tmp_path / "b", 0)
        others = [routed_in(tmp_path / f"s{seed}", seed) for seed in (1, 2, 3)]
    assert len(first) == 4 and first != [0, 1, 2, 3], "not the first ones in stream order"
    assert again == first, "the same seed routes the same records"
    assert any(found != first for found in others), "the seed decides the draw"


def test_a_record_without_the_chosen_confidence_is_rejected(tmp_path: Path) -> None:
    recipe = {"name": "route-only", "input": "required", "steps": [
        {"use": "co-annotate", "with": {"labels": list(LABELS), "uncertainty": "verbalized",
                                        "budget": 1}}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    data = write_jsonl(tmp_path / "in.jsonl", [
        {"text": "a", "label": "positive", "confidence": {"vote_share": 1.0, "verbalized": 0.3}},
        {"text": "b", "label": "negative", "confidence": {"vote_share": 0.6}}])
    run(Pipeline.from_recipe(*resolve_recipe(str(path))), tmp_path / "out", data)
    [kept] = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert kept["text"] == "a" and kept["route"] == "human"
    assert kept["uncertainty"] == 0.7
    [reject] = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert reject["field"] == "confidence.verbalized" and "verbalized: true" in reject["reason"]


def test_options_need_a_rule_and_a_schema() -> None:
    with pytest.raises(ValueError, match="threshold, a budget"):
        CoAnnotate(labels=list(LABELS))
    with pytest.raises(ValueError, match="budget or budget_share"):
        CoAnnotate(labels=list(LABELS), budget=3, budget_share=0.5)
    with pytest.raises(ValueError, match="labels and schema_file"):
        CoAnnotate(budget=3)
    with pytest.raises(ConfigError, match="at least two labels"):
        CoAnnotate(labels=["only"], budget=3)


def annotation(user: int, *labels: str, cancelled: bool = False) -> dict[str, Any]:
    """One annotation as Label Studio exports it."""
    return {"id": random.randint(1, 10**6), "completed_by": user, "was_cancelled": cancelled,
            "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                        "value": {"choices": list(labels)}}]}


def exported(tasks: list[dict[str, Any]], answers: dict[str, list[dict[str, Any]]]
             ) -> list[dict[str, Any]]:
    """A Label Studio JSON export of `tasks` with `answers` (text -> annotations)."""
    return [{"id": 100 + i, **task, "annotations": answers.get(task["data"]["text"], [])}
            for i, task in enumerate(tasks)]


def test_people_s_labels_replace_the_model_s_and_the_model_s_are_kept(
        tmp_path: Path, labeler: FakeOpenAIServer) -> None:
    records = route(tmp_path, labeler.url, threshold=0.5)
    out = tmp_path / "out"
    tasks = json.loads((out / "annotation" / "tasks.json").read_text())
    export = exported(tasks, {
        "Bus was late.": [annotation(1, "negative"), annotation(2, "negative")],
        "It is a chair.": [annotation(1, "neutral"), annotation(2, "neutral"),
                           annotation(3, "positive", cancelled=True)],
        "Hmm, well.": [annotation(1, "neutral"), annotation(2, "happy")],
    })
    export.append({"id": 999, "data": {"text": "x", "synthaug_id": "no-such-id"},
                   "annotations": [annotation(1, "positive")]})
    (tmp_path / "export.json").write_text(json.dumps(export))
    result = CliRunner().invoke(app, ["annotate", "import", str(out), "--from",
                                      str(tmp_path / "export.json")])
    assert result.exit_code == 3, result.output  # done, with rejects
    merged = {r["text"]: r for r in read_jsonl(out / "annotated" / "records.jsonl")}
    assert len(merged) == 6, "every record is written, annotated or not"
    bus = merged["Bus was late."]
    assert bus["label"] == "negative" and bus["model_label"] == "positive"
    assert bus["human_labels"] == {"user 1": "negative", "user 2": "negative"}
    by = bus["_meta"]["labeled_by"]
    assert by["kind"] == "human" and by["annotator"] == "user 1" and by["tool"] == "label-studio"
    assert by["annotators"] == ["user 1", "user 2"] and by["agreement"] == 1.0
    assert by["model_labeled_by"]["model"] == "labeler-x"
    assert by["task"] == 100 + [t["data"]["text"] for t in tasks].index("Bus was late.")
    assert bus["_meta"]["id"] == records["Bus was late."]["_meta"]["id"]
    assert merged["It is a chair."]["human_labels"] == {"user 1": "neutral", "user 2": "neutral"}
    # the annotation outside the schema is rejected; the other person's label stands
    assert merged["Hmm, well."]["label"] == "neutral"
    assert merged["Hmm, well."]["human_labels"] == {"user 1": "neutral"}
    # routed but not annotated: still the model's label, counted as pending
    meeting = merged["Meeting at 3."]
    assert meeting["label"] == "neutral" and "model_label" not in meeting
    assert meeting["_meta"]["labeled_by"]["kind"] == "model"
    assert merged["A sunny day."] == {k: v for k, v in records["A sunny day."].items()}
    rejects = read_jsonl(out / "annotated" / "rejects.jsonl")
    assert [r["field"] for r in rejects] == ["annotations[1].result", "data.synthaug_id"]
    assert "'happy' is not in the schema" in rejects[0]["reason"]
    assert "no-such-id is not in the dataset" in rejects[1]["reason"]
    summary = json.loads((out / "annotated" / "agreement.json").read_text())
    assert summary["pending"] == [records["Meeting at 3."]["_meta"]["id"]]
    assert summary["counts"]["cancelled annotations"] == 1
    pairs = [(merged[t]["model_label"], merged[t]["label"])
             for t in ("Bus was late.", "It is a chair.", "Hmm, well.")]
    expected = cohen_kappa_score([m for m, _ in pairs], [h for _, h in pairs])
    assert summary["agreement"]["model_vs_human"]["kappa"] == pytest.approx(expected, abs=1e-4)
    same = sum(m == h for m, h in pairs) / 3
    assert summary["agreement"]["model_vs_human"]["agreement"] == round(same, 4)


def test_export_command_writes_tasks_for_routed_or_all_records(
        tmp_path: Path, labeler: FakeOpenAIServer) -> None:
    route(tmp_path, labeler.url, budget=1)
    out, runner = tmp_path / "out", CliRunner()
    result = runner.invoke(app, ["annotate", "export", str(out), "--to",
                                 str(tmp_path / "ls" / "routed.json")])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "ls" / "routed.json").read_text())) == 1
    assert (tmp_path / "ls" / "config.xml").is_file()
    result = runner.invoke(app, ["annotate", "export", str(out), "--all", "--to",
                                 str(tmp_path / "ls" / "all.json")])
    assert len(json.loads((tmp_path / "ls" / "all.json").read_text())) == 6


def test_bad_input_fails_naming_the_file(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "labeled.jsonl", [{"text": "a", "label": "positive"}])
    runner = CliRunner()
    result = runner.invoke(app, ["annotate", "export", str(data)])
    assert result.exit_code == 2 and "no label schema" in result.output
    schema = tmp_path / "schema.yaml"
    schema.write_text(yaml.safe_dump({"labels": list(LABELS)}))
    result = runner.invoke(app, ["annotate", "export", str(data), "--schema", str(schema)])
    assert result.exit_code == 2 and "run co-annotate first, or give --all" in result.output
    (tmp_path / "export.json").write_text('{"tasks": []}')
    result = runner.invoke(app, ["annotate", "import", str(data), "--schema", str(schema),
                                 "--from", str(tmp_path / "export.json")])
    assert result.exit_code == 2 and "export.json" in result.output
    assert "list of tasks" in result.output
    (tmp_path / "export.json").write_text('[{"id": 1, "data": {"text": "a"}},\n {"id": ')
    result = runner.invoke(app, ["annotate", "import", str(data), "--schema", str(schema),
                                 "--from", str(tmp_path / "export.json")])
    assert result.exit_code == 2 and re.search(r"not JSON \(line 2\)", result.output)


def test_multi_label_answers_merge_as_sets() -> None:
    schema = load_schema(["sports", "politics", "science"], None, True, "t")
    record = {"text": "x", "labels": ["sports"], "_meta": {"id": "r1", "labeled_by": {
        "kind": "model", "model": "m"}}}
    task = {"id": 5, "data": {"text": "x", "synthaug_id": "r1"},
            "annotations": [annotation(1, "science", "politics"), annotation(2)]}
    done = merge([record], [task], schema, "e.json")
    [out] = done.records
    assert out["labels"] == ["politics", "science"] and out["model_labels"] == ["sports"]
    assert out["human_labels"] == {"user 1": ["politics", "science"], "user 2": []}
    assert done.rejects == []


def test_cohen_kappa_by_hand_and_against_sklearn() -> None:
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> p_o 0.7, p_e 0.5
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(5, 40)
        x = [rng.choice("abc") for _ in range(n)]
        y = [v if rng.random() < 0.6 else rng.choice("abcd") for v in x]
        assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined
    assert cohen_kappa([], []) is None


def test_fleiss_kappa_on_the_textbook_table() -> None:
    # Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[c for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=1e-4)
    # two raters: Fleiss' kappa is Scott's pi
    assert fleiss_kappa([["a", "a"], ["b", "b"], ["a", "b"], ["b", "b"]]) == \
        pytest.approx((0.75 - (3 / 8) ** 2 - (5 / 8) ** 2) / (1 - (3 / 8) ** 2 - (5 / 8) ** 2))


def test_agreement_per_annotator_pairs_and_confusion() -> None:
    rows = [("p", {"ann": "p", "bob": "p"}, "p"), ("p", {"ann": "n", "bob": "n"}, "n"),
            ("n", {"ann": "n", "bob": "p"}, "n"), ("n", {"ann": "n"}, "n")]
    records = [{"model_label": m, "human_labels": h, "label": f} for m, h, f in rows]
    found = label_agreement([*records, {"label": "p"}])
    assert found is not None and found["items"] == 4
    assert found["model_vs_human"]["agreement"] == 0.75
    assert found["model_vs_annotator"]["bob"]["items"] == 3
    assert found["model_vs_annotator"]["ann"]["kappa"] == pytest.approx(
        cohen_kappa_score(["p", "p", "n", "n"], ["p", "n", "n", "n"]), abs=1e-4)
    assert found["annotator_pairs"]["ann | bob"]["items"] == 3
    assert found["fleiss"]["items"] == 3
    assert found["confusion"] == {"labels": ["n", "p"], "matrix": [[2, 0], [1, 1]]}
    assert label_agreement([{"label": "p"}]) is None


def test_model_agreement_is_with_the_merged_label_not_the_first_annotator() -> None:
    schema = load_schema(list(LABELS), None, False, "t")
    records = [{"text": f"t{i}", "label": model, "_meta": {"id": f"r{i}"}}
               for i, model in enumerate(["positive", "negative", "neutral"])]
    # the first annotator is outvoted on every item; the majority agrees with the model
    votes = [("negative", "positive", "positive"), ("neutral", "negative", "negative"),
             ("positive", "neutral", "neutral")]
    tasks = [{"id": i, "data": {"text": f"t{i}", "synthaug_id": f"r{i}"},
              "annotations": [annotation(user, vote) for user, vote in enumerate(row, 1)]}
             for i, row in enumerate(votes)]
    merged = merge(records, tasks, schema, "e.json").records
    assert [r["label"] for r in merged] == ["positive", "negative", "neutral"]
    assert [next(iter(r["human_labels"].values())) for r in merged] == [
        "negative", "neutral", "positive"], "the first annotator differs from the merge"
    found = label_agreement(merged)
    assert found is not None
    assert found["model_vs_human"]["agreement"] == 1.0
    assert found["model_vs_annotator"]["user 1"]["agreement"] == 0.0
    assert found["confusion"]["matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_report_shows_model_human_agreement(tmp_path: Path) -> None:
    records = [{"text": f"t{i}", "model_label": m, "label": h, "human_labels": {"user 1": h}}
               for i, (m, h) in enumerate([("p", "p"), ("p", "n"), ("n", "n"), ("n", "n")])]
    data = write_jsonl(tmp_path / "annotated.jsonl", records)
    result = CliRunner().invoke(app, ["report", str(data), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "Labels: model vs human agreement" in page
    assert f"<td>{round(cohen_kappa(['p', 'p', 'n', 'n'], ['p', 'n', 'n', 'n']) or 0, 4)}</td>" \
        in page
    assert "<td>model: p</td><td>1</td><td>1</td>" in page  # rows: model, columns: people


def test_a_second_import_keeps_the_model_s_label_and_labeler() -> None:
    schema = load_schema(list(LABELS), None, False, "t")
    record = {"text": "x", "label": "positive", "_meta": {"id": "r1", "labeled_by": {
        "kind": "model", "model": "m"}}}
    task = {"id": 5, "data": {"text": "x", "synthaug_id": "r1"},
            "annotations": [annotation(1, "negative")]}
    [once] = merge([record], [task], schema, "e.json").records
    task["annotations"] = [annotation(1, "negative"), annotation(2, "neutral"),
                           annotation(3, "neutral")]
    [twice] = merge([once], [task], schema, "e.json").records
    assert twice["label"] == "neutral" and twice["model_label"] == "positive"
    assert twice["_meta"]["labeled_by"]["model_labeled_by"] == {"kind": "model", "model": "m"}
    assert twice["_meta"]["labeled_by"]["annotator"] == "user 2"
    assert twice["_meta"]["labeled_by"]["agreement"] == round(2 / 3, 4)
