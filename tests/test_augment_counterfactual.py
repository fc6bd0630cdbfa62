"""Counterfactual augmentation: CORE (retrieve label-flipping excerpts, then edit with them in
the prompt) and DISCO (spans, over-generated fills per target label, a teacher that keeps only
label flips), against a real HTTP server with scripted replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from synthaug.errors import ConfigError
from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.steps.augment.core import CoreRetrieve
from synthaug.steps.augment.disco import chunk
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl
from tests.recipe_helpers import prompt_of

SENTIMENT = {"positive": "the reviewer liked the film and praises it",
             "negative": "the reviewer disliked the film and criticizes it"}
NLI = {"entailment": "the hypothesis must be true", "neutral": "it may or may not be true",
       "contradiction": "the hypothesis cannot be true"}
POSITIVE_NEAR = "The acting was superb and the ending was wonderful."
NEGATIVE_NEAR = "The acting was wooden and the ending was dreadful."
CORPUS = [POSITIVE_NEAR, NEGATIVE_NEAR, "Chop the onions and fry them in butter.",
          "Stocks fell sharply on Monday."]
REVIEW = "The acting was brilliant and the ending moved me."


def pipeline(tmp: Path, url: str, steps: list[dict[str, Any]]) -> Pipeline:
    """A recipe of `steps` whose default and teacher roles are the server at `url`."""
    target = {"use": "openai", "with": {"base_url": url, "model": "m", "concurrency": 1}}
    recipe = {"name": "counterfactual-test", "input": "required", "steps": steps,
              "backends": {"default": target, "teacher": target}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Pipeline.from_recipe(*resolve_recipe(str(path)))


def outputs(tmp: Path, url: str, steps: list[dict[str, Any]], rows: list[dict[str, Any]]
            ) -> dict[str, list[dict[str, Any]]]:
    """Run the steps on `rows`; the records and each side file."""
    run(pipeline(tmp, url, steps), tmp / "out", write_jsonl(tmp / "in.jsonl", rows))
    out = tmp / "out"
    return {name: read_jsonl(out / f"{name}.jsonl") if (out / f"{name}.jsonl").exists() else []
            for name in ("records", "dropped", "failures", "rejects")}


def core_steps(corpus: Path, **edit: Any) -> list[dict[str, Any]]:
    return [{"use": "core-retrieve", "name": "retrieve",
             "with": {"corpus": str(corpus), "labels": SENTIMENT, "pool": 4, "k": 1}},
            {"use": "core-edit", "name": "edit", "with": {"kind": "review", **edit}}]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in CORPUS])


# -- CORE -------------------------------------------------------------------------------------


def test_core_retrieves_the_label_flipping_excerpt_and_edits_with_it_in_the_prompt(
        tmp_path: Path, server: FakeOpenAIServer, corpus: Path) -> None:
    server.enqueue("Edited review: The acting was wooden and the ending was dreadful to me.")
    found = outputs(tmp_path, server.url, core_steps(corpus),
                    [{"text": REVIEW, "label": "positive"}])
    # the nearest excerpt is the positive one; the flip score prefers the negative one
    assert found["records"][0]["excerpts"] == [NEGATIVE_NEAR]
    prompt = prompt_of(server.calls[0])
    query = prompt.rsplit("\n\n", 1)[1]
    assert f"Review: {REVIEW}" in query and f"- {NEGATIVE_NEAR}" in query
    assert "Target label: negative" in query and POSITIVE_NEAR not in prompt
    assert prompt.count("Edited review:") == 3, "two demonstrations, then the query"


def test_core_flip_score_changes_the_ranking(corpus: Path) -> None:
    step = CoreRetrieve(corpus=str(corpus), labels=SENTIMENT, pool=4, k=2, flip_weight=0.0)
    step.load()
    plain = [text for text, _ in step.ranked(REVIEW, "positive", "negative")]
    flipped = CoreRetrieve(corpus=str(corpus), labels=SENTIMENT, pool=4, k=2)
    flipped.load()
    assert plain == [POSITIVE_NEAR, NEGATIVE_NEAR], "plain retrieval: nearest first"
    assert [t for t, _ in flipped.ranked(REVIEW, "positive", "negative")] == \
        [NEGATIVE_NEAR, POSITIVE_NEAR]
    assert flipped.ranked(REVIEW, "negative", "positive")[0][0] == POSITIVE_NEAR


def test_core_keeps_changed_edits_with_provenance_and_drops_unchanged_ones(
        tmp_path: Path, corpus: Path) -> None:
    other = "The plot was dull and I left early."

    def answer(body: dict[str, Any]) -> Reply:
        query = prompt_of(body).rsplit("\n\n", 1)[1]
        if "dull" in query:  # the model hands the input back: no counterfactual
            return Reply(text=f"{other.upper()} ")
        return Reply(text="The acting was wooden and the ending left me cold.")

    with FakeOpenAIServer(answer) as server:
        found = outputs(tmp_path, server.url, core_steps(corpus),
                        [{"text": REVIEW, "label": "positive"},
                         {"text": other, "label": "negative"}])
    assert len(found["records"]) == 1
    kept = found["records"][0]
    assert kept["text"] == "The acting was wooden and the ending left me cold."
    assert kept["original_text"] == REVIEW
    assert (kept["label"], kept["original_label"], kept["target_label"]) == \
        ("negative", "positive", "negative")
    assert kept["_meta"]["parents"] and kept["_meta"]["step"] == "edit"
    assert [d["reason"] for d in found["dropped"]] == ["edit unchanged"]


def test_core_words_mode_shows_the_excerpts_content_words(
        tmp_path: Path, server: FakeOpenAIServer, corpus: Path) -> None:
    server.enqueue("The acting was wooden and the ending was dreadful.")
    outputs(tmp_path, server.url, core_steps(corpus, show="words"),
            [{"text": REVIEW, "label": "positive"}])
    query = prompt_of(server.calls[0]).rsplit("\n\n", 1)[1]
    assert "Words from related excerpts: wooden, dreadful" in query


def test_core_corpus_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(ConfigError, match=r"corpus.jsonl.*line 2: no text in field 'text'"):
        CoreRetrieve(corpus=str(bad), labels=SENTIMENT).load()


def test_core_rejects_a_label_outside_the_set(tmp_path: Path, server: FakeOpenAIServer,
                                             corpus: Path) -> None:
    found = outputs(tmp_path, server.url, core_steps(corpus),
                    [{"text": REVIEW, "label": "mixed"}])
    assert found["records"] == [] and server.calls == []
    assert "not one of positive, negative" in found["rejects"][0]["reason"]


def test_a_misspelt_target_fails_naming_the_field_before_any_call(
        tmp_path: Path, server: FakeOpenAIServer, corpus: Path) -> None:
    from typer.testing import CliRunner

    from synthaug.cli import app

    steps = core_steps(corpus)
    steps[0]["with"]["targets"] = ["postive"]
    with pytest.raises(ConfigError, match=r"field targets: 'postive' not one of positive"):
        pipeline(tmp_path, server.url, steps)
    with pytest.raises(ConfigError, match=r"field targets: 'neutrl' not one of entailment"):
        pipeline(tmp_path, server.url, disco_steps(targets=["neutrl"]))
    with pytest.raises(ConfigError, match=r"field targets: no label given"):
        CoreRetrieve(corpus=str(corpus), labels=SENTIMENT, targets=[])
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": REVIEW, "label": "negative"}])
    result = CliRunner().invoke(app, ["run", str(tmp_path / "recipe.yaml"), "-i", str(data),
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "targets" in result.output, result.output
    assert server.calls == []


def test_a_record_whose_label_is_the_only_target_is_dropped_with_a_reason(
        tmp_path: Path, server: FakeOpenAIServer, corpus: Path) -> None:
    server.enqueue("The acting was wooden and the ending was dreadful to me.")
    steps = core_steps(corpus)
    steps[0]["with"]["targets"] = ["Negative"]  # the schema's spelling is taken
    found = outputs(tmp_path, server.url, steps, [{"text": REVIEW, "label": "positive"},
                                                  {"text": NEGATIVE_NEAR, "label": "negative"}])
    assert [r["target_label"] for r in found["records"]] == ["negative"]
    assert len(server.calls) == 1
    assert [(d["reason"], d["record"]["text"]) for d in found["dropped"]] == [
        ("no target label", NEGATIVE_NEAR)]


def test_disco_drops_a_pair_whose_label_is_the_only_target(tmp_path: Path,
                                                           server: FakeOpenAIServer) -> None:
    found = outputs(tmp_path, server.url, disco_steps(targets=["contradiction"]),
                    [{**PAIR, "label": "contradiction", "spans": ["in a bar"]}])
    assert found["records"] == [] and server.calls == []
    assert [(d["reason"], d["detail"]) for d in found["dropped"]] == [
        ("no target label", "its label contradiction is the only target")]


# -- DISCO ------------------------------------------------------------------------------------

PAIR = {"premise": "A man reads the paper in a bar with green lighting.",
        "hypothesis": "The man is inside.", "label": "entailment"}


def disco_steps(**perturb: Any) -> list[dict[str, Any]]:
    return [{"use": "disco-spans", "name": "spans"},
            {"use": "disco-perturb", "name": "perturb",
             "with": {"labels": NLI, "max_spans": 1, "n": 1, **perturb}},
            {"use": "counterfactual-judge", "name": "teacher",
             "with": {"fields": ["premise", "hypothesis"], "labels": NLI}}]


def test_disco_spans_come_from_the_chunker_or_the_record(tmp_path: Path,
                                                         server: FakeOpenAIServer) -> None:
    assert chunk("A land rover is being driven across a river.") == \
        ["A land rover", "is being driven", "across a river"]
    own = ["the paper", "green lighting"]
    found = outputs(tmp_path, server.url, disco_steps()[:1], [PAIR, {**PAIR, "spans": own}])
    assert [r["spans"] for r in found["records"]] == [
        ["A man", "reads the paper", "in a bar", "with green lighting"], own]


def teacher_and_filler(fills: dict[str, str], teacher: dict[str, str],
                       original: str = "entailment") -> FakeOpenAIServer:
    """A server: fills chosen by the target label; the teacher labels by a word of the pair
    (the original pair gets `original`)."""
    def answer(body: dict[str, Any]) -> Reply:
        text = prompt_of(body)
        if text.startswith("You are the teacher"):
            example = text.split("Example:\n", 1)[1]
            said = next((label for word, label in teacher.items() if word in example),
                        original)
            return Reply(text=f"Label: {said}")
        wanted = text.rsplit("Relationship wanted: ", 1)[1].split(" (")[0]
        return Reply(text=fills[wanted])

    return FakeOpenAIServer(answer)


def test_disco_overgenerates_for_every_target_label_and_span(tmp_path: Path) -> None:
    fills = {"contradiction": "in the rain outside", "neutral": "in his favourite bar"}
    with teacher_and_filler(fills, {}) as server:
        found = outputs(tmp_path, server.url, disco_steps(max_spans=2, n=3)[:2],
                        [{**PAIR, "spans": ["in a bar", "reads the paper"]}])
        calls = [prompt_of(c) for c in server.calls]
    assert len(calls) == 4, "2 target labels x 2 spans"
    assert all(c["n"] == 3 for c in server.calls)
    queries = [c.rsplit("\n\n", 1)[1] for c in calls]
    assert sorted(q.split("\n")[0] for q in queries) == sorted(
        ["Premise: A man reads the paper [blank] with green lighting."] * 2 +
        ["Premise: A man [blank] in a bar with green lighting."] * 2)
    assert len(found["records"]) == 12, "3 fills per masked span"
    for record in found["records"]:
        assert record["label"] == record["target_label"] != "entailment"
        assert record["original_label"] == "entailment"
        assert record["original_premise"] == PAIR["premise"]
        assert record["premise"] == PAIR["premise"].replace(record["span"],
                                                            record["replacement"])


def test_disco_teacher_keeps_only_counterfactuals_whose_label_flipped(tmp_path: Path) -> None:
    fills = {"contradiction": "in the rain outside", "neutral": "in a quiet corner"}
    # the teacher: the rain premise contradicts; the quiet corner still entails (no flip)
    with teacher_and_filler(fills, {"rain": "contradiction", "corner": "entailment"}) as srv:
        found = outputs(tmp_path, srv.url, disco_steps(), [{**PAIR, "spans": ["in a bar"]}])
    assert [(r["premise"], r["label"], r["teacher_label"]) for r in found["records"]] == [
        ("A man reads the paper in the rain outside with green lighting.", "contradiction",
         "contradiction")]
    assert found["records"][0]["teacher_original_label"] == "entailment"
    dropped = [(d["reason"], d["record"]["target_label"]) for d in found["dropped"]]
    assert dropped == [("label did not flip", "neutral")]


def test_disco_teacher_drops_a_flip_to_another_label_than_the_target(tmp_path: Path) -> None:
    fills = {"contradiction": "in the rain outside", "neutral": "in a quiet corner"}
    # the quiet corner, meant to be neutral, reads as a contradiction to the teacher
    with teacher_and_filler(fills, {"rain": "contradiction", "corner": "contradiction"}
                            ) as server:
        found = outputs(tmp_path, server.url, disco_steps(), [{**PAIR, "spans": ["in a bar"]}])
    assert [r["target_label"] for r in found["records"]] == ["contradiction"]
    assert [(d["reason"], d["detail"]) for d in found["dropped"]] == [
        ("label did not flip", "teacher: contradiction, target: neutral")]


def test_disco_teacher_drops_a_pair_that_already_had_the_target_label(tmp_path: Path) -> None:
    fills = {"contradiction": "in the rain outside", "neutral": "in a quiet corner"}
    with teacher_and_filler(fills, {"rain": "contradiction", "corner": "neutral"},
                            original="contradiction") as server:
        found = outputs(tmp_path, server.url, disco_steps(), [{**PAIR, "spans": ["in a bar"]}])
    assert [r["target_label"] for r in found["records"]] == ["neutral"]
    assert [d["reason"] for d in found["dropped"]] == ["original already had the target label"]


def test_disco_teacher_answers_are_read_strictly(tmp_path: Path) -> None:
    fills = {"contradiction": "in the rain outside", "neutral": "in a quiet corner"}
    with teacher_and_filler(fills, {"rain": "probably contradiction", "corner": "neutral"}
                            ) as server:
        found = outputs(tmp_path, server.url, disco_steps(), [{**PAIR, "spans": ["in a bar"]}])
    assert [r["target_label"] for r in found["records"]] == ["neutral"]
    assert len(found["failures"]) == 1
    assert "not a label of the schema" in found["failures"][0]["reason"]


def test_disco_screens_fills_like_the_released_filter(tmp_path: Path) -> None:
    fills = {"contradiction": "in a bar.", "neutral": "[blank] should be: [blank]"}
    with teacher_and_filler(fills, {}) as server:
        found = outputs(tmp_path, server.url, disco_steps()[:2],
                        [{**PAIR, "spans": ["in a bar"]}])
    assert found["records"] == []
    assert sorted(d["reason"] for d in found["dropped"]) == ["prompt text in the fill",
                                                             "span unchanged"]


def test_disco_rejects_spans_that_are_not_in_the_premise(tmp_path: Path,
                                                         server: FakeOpenAIServer) -> None:
    found = outputs(tmp_path, server.url, disco_steps(),
                    [{**PAIR, "spans": ["in a pub"]}])
    assert found["records"] == [] and server.calls == []
    assert found["rejects"][0]["field"] == "spans"


def test_demonstration_files_are_checked_when_the_step_is_built(tmp_path: Path) -> None:
    from synthaug.steps.augment.core import CoreEdit
    from synthaug.steps.augment.disco import DiscoPerturb

    demos = write_jsonl(tmp_path / "demos.jsonl", [
        {"premise": "A dog runs.", "hypothesis": "A dog moves.", "label": "entailment",
         "span": "a cat", "replacement": "sleeps", "target": "neutral"}])
    with pytest.raises(ConfigError, match=r"demos.jsonl.*demonstration 1 .*span"):
        DiscoPerturb(labels=NLI, demos=str(demos))
    with pytest.raises(ConfigError, match=r"demos.jsonl.*demonstration 1 needs text, label"):
        CoreEdit(demos=str(demos))
