"""llm-label: self-consistency confidence, strict schema reading (JSON schema or text), multi-
label sets, verbalized confidence and first-token logprob confidence, against a real HTTP
server with scripted replies."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthaug.errors import ConfigError
from synthaug.pipeline import Pipeline, resolve_recipe
from synthaug.steps.augment.label import LLMLabel, label_probabilities, tally
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl
from tests.recipe_helpers import prompt_of

SENTIMENT = {"positive": "pleased", "negative": "unhappy", "neutral": "no feeling"}
TOPICS = {"sports": "games and athletes", "politics": "government", "science": "research"}


def pipeline(tmp: Path, url: str, **options: Any) -> Pipeline:
    """One llm-label step (text mode unless told) on a model at `url`."""
    step = {"labels": SENTIMENT, "structured": False, **options}
    recipe = {"name": "label-test", "input": "required",
              "steps": [{"use": "llm-label", "name": "label", "with": step}],
              "backends": {"default": {"use": "openai", "with": {
                  "base_url": url, "model": "labeler-x", "concurrency": 1}}}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Pipeline.from_recipe(*resolve_recipe(str(path)))


def label_one(tmp: Path, server: FakeOpenAIServer, *replies: str | Reply, text: str = "I love it.",
              **options: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Label one record with the scripted replies; (records, failures)."""
    server.enqueue(*replies)
    data = write_jsonl(tmp / "in.jsonl", [{"text": text}])
    run(pipeline(tmp, server.url, **options), tmp / "out", data)
    return read_jsonl(tmp / "out" / "records.jsonl"), read_jsonl(tmp / "out" / "failures.jsonl")


def entropy(*shares: float) -> float:
    return round(-sum(p * math.log2(p) for p in shares), 4)


def test_majority_label_with_vote_share_and_entropy(tmp_path: Path,
                                                    server: FakeOpenAIServer) -> None:
    # a minority answer comes first: the kept label is the majority, not the first vote
    records, failures = label_one(tmp_path, server, "Label: negative", "Label: positive",
                                  "Label: Positive.", "**Label:** positive", "neutral", k=5)
    assert failures == [] and len(records) == 1
    out = records[0]
    assert out["label"] == "positive"
    assert out["votes"] == {"positive": 3, "negative": 1, "neutral": 1}
    assert out["confidence"] == {"vote_share": 0.6, "entropy": entropy(0.6, 0.2, 0.2)}
    assert out["text"] == "I love it."
    assert out["_meta"]["labeled_by"] == {"kind": "model", "model": "labeler-x", "samples": 5}
    assert len(server.calls) == 5
    seeds = {call["seed"] for call in server.calls}
    assert len(seeds) == 5, "each vote is its own seeded sample"
    assert "- negative: unhappy" in prompt_of(server.calls[0])


def test_unanimous_votes_have_zero_entropy(tmp_path: Path, server: FakeOpenAIServer) -> None:
    records, _ = label_one(tmp_path, server, *["Label: neutral"] * 3, k=3)
    assert records[0]["confidence"] == {"vote_share": 1.0, "entropy": 0.0}


def test_an_answer_outside_the_schema_is_a_failure_not_a_guess(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    records, failures = label_one(tmp_path, server, "Label: mostly positive", k=1)
    assert records == []
    assert len(failures) == 1 and "not a label of the schema" in failures[0]["reason"]
    assert failures[0]["raw"] == ["Label: mostly positive"]


def test_an_invalid_vote_counts_against_the_majority(tmp_path: Path,
                                                     server: FakeOpenAIServer) -> None:
    records, failures = label_one(tmp_path, server, "Label: negative", "Label: happy",
                                  "Label: negative", k=3)
    out = records[0]
    assert out["label"] == "negative" and out["votes"] == {"negative": 2}
    assert out["confidence"] == {"vote_share": round(2 / 3, 4),
                                 "entropy": entropy(2 / 3, 1 / 3), "invalid": 1}
    assert failures == []  # the record is labeled; its invalid vote stays on it
    [bad] = out["invalid_votes"]
    assert bad["vote"] == 2 and bad["raw"] == "Label: happy" and "'happy'" in bad["error"]


def test_structured_output_asks_the_backend_for_a_json_schema(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    replies = ['{"label": "negative", "confidence": 70}', '{"label": "good", "confidence": 90}',
               '{"label": "negative", "confidence": 150}', '{"label": "neutral", "confidence": 40}']
    records, failures = label_one(tmp_path, server, *replies, k=4, structured=None,
                                  verbalized=True)
    schema = server.calls[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["positive", "negative", "neutral"]
    assert schema["required"] == ["label", "confidence"]
    out = records[0]
    # 'good' is outside the enum and 150 outside 0-100: both votes are invalid
    assert failures == []
    assert [bad["raw"] for bad in out["invalid_votes"]] == [replies[1], replies[2]]
    assert out["label"] == "negative"  # tie 1-1: the earlier sample's label
    assert out["confidence"]["verbalized"] == 0.7
    assert out["confidence"]["invalid"] == 2


def test_verbalized_confidence_is_the_mean_of_the_agreeing_votes(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    records, failures = label_one(
        tmp_path, server, "Label: positive\nConfidence: 80%", "Label: positive\nConfidence: 60",
        "Label: negative\nConfidence: 90", "Label: positive", k=4, verbalized=True)
    out = records[0]
    assert out["confidence"]["verbalized"] == 0.7
    assert out["confidence"]["vote_share"] == 0.5  # the vote without a confidence is invalid
    assert failures == []
    [bad] = out["invalid_votes"]
    assert bad["vote"] == 4 and "confidence" in bad["error"]


def test_multi_label_sets(tmp_path: Path, server: FakeOpenAIServer) -> None:
    records, failures = label_one(
        tmp_path, server, "Labels: politics, sports", "Labels: Sports and politics",
        "Labels: sports", "Labels: none", k=4, labels=TOPICS, multi_label=True)
    assert failures == []
    out = records[0]
    assert out["labels"] == ["sports", "politics"] and "label" not in out
    assert out["votes"] == {"sports": 3, "politics": 2}
    assert out["confidence"] == {"vote_share": 0.5, "entropy": entropy(0.5, 0.25, 0.25)}


def test_multi_label_json_rejects_an_unknown_label(tmp_path: Path,
                                                   server: FakeOpenAIServer) -> None:
    records, failures = label_one(tmp_path, server, '{"labels": ["science", "art"]}',
                                  k=1, labels=TOPICS, multi_label=True, structured=None)
    schema = server.calls[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["labels"]["items"]["enum"] == list(TOPICS)
    assert records == [] and "'art' is not a label" in failures[0]["reason"]


def test_logprob_confidence_from_the_first_token_alternatives(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    top = {"pos": math.log(0.5), "negative": math.log(0.2), "Neutral": math.log(0.05),
           "The": math.log(0.2)}
    records, _ = label_one(tmp_path, server, "Label: positive",
                           Reply(text="positive", alternatives=[top], logprobs=[math.log(0.5)]),
                           k=1, logprobs=True)
    asked = server.calls[-1]
    assert asked["logprobs"] is True and asked["top_logprobs"] == 5
    assert "label only" in prompt_of(asked) and asked["temperature"] == 0.0
    # 'The' begins no label; the others are normalized over the labels' mass (0.75)
    assert records[0]["confidence"]["logprob"] == round(0.5 / 0.75, 4)


def test_label_probabilities_and_tally_units() -> None:
    names = ["positive", "negative"]
    assert label_probabilities({"x": -0.1}, names) == {}
    found = label_probabilities({" posit": math.log(0.3), "neg": math.log(0.1)}, names)
    assert found == pytest.approx({"positive": 0.75, "negative": 0.25})
    kept = tally([("b",), ("a",), ("a",), ("b",), None], ["a", "b"])
    assert kept.labels == ("b",) and kept.vote_share == 0.4  # tie: the first sampled


def test_a_first_token_that_begins_several_labels_gives_no_probability() -> None:
    very = ["very positive", "very negative"]
    assert label_probabilities({"very": -0.1, "neg": -3.0}, very) == {
        "very positive": None, "very negative": None}
    found = label_probabilities({"ne": -0.5, "pos": -1.0}, list(SENTIMENT))
    assert found["negative"] is None and found["neutral"] is None
    assert found["positive"] == pytest.approx(math.exp(-1.0) / (math.exp(-1.0) + math.exp(-0.5)))


def test_logprob_confidence_is_unknown_when_labels_share_their_first_token(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    top = {"very": math.log(0.9), "The": math.log(0.05)}
    records, failures = label_one(
        tmp_path, server, "Label: very negative",
        Reply(text="very", alternatives=[top], logprobs=[math.log(0.9)]),
        k=1, logprobs=True, labels=["very positive", "very negative"])
    assert failures == []
    confidence = records[0]["confidence"]
    assert confidence["logprob"] is None  # not 0.5: 'very' begins both labels
    assert "begins several labels" in confidence["logprob_unknown"]


def test_a_label_name_holding_and_is_read_whole(tmp_path: Path,
                                                 server: FakeOpenAIServer) -> None:
    topics = {**TOPICS, "science and technology": "inventions"}
    records, failures = label_one(
        tmp_path, server, "Labels: Science and Technology, sports",
        "Labels: sports and science and technology", "Labels: science and technology and art",
        k=3, labels=topics, multi_label=True)
    assert failures == []
    out = records[0]
    assert out["labels"] == ["sports", "science and technology"]
    assert out["votes"] == {"sports": 2, "science and technology": 2}
    [bad] = out["invalid_votes"]  # a leftover that is no label still makes the vote invalid
    assert bad["vote"] == 3 and "'art'" in bad["error"]


def test_explanation_on_request(tmp_path: Path, server: FakeOpenAIServer) -> None:
    records, _ = label_one(tmp_path, server, "Label: negative\nExplanation: it complains.",
                           "Label: positive\nExplanation: praise.",
                           "Label: negative\nExplanation: the writer is unhappy.",
                           k=3, explain=True)
    assert records[0]["explanation"] == "it complains."
    assert "Explanation:" in prompt_of(server.calls[0])


def test_schema_file_and_bad_schemas(tmp_path: Path) -> None:
    good = tmp_path / "schema.yaml"
    good.write_text(yaml.safe_dump({"labels": ["spam", "ham"], "multi_label": False,
                                    "task": "Is it spam?"}))
    step = LLMLabel(schema_file=str(good))
    assert list(step.schema.labels) == ["spam", "ham"] and step.schema.task == "Is it spam?"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"labels": ["spam", "ham"], "multilabel": True}))
    with pytest.raises(ConfigError, match=r"bad\.yaml") as caught:
        LLMLabel(schema_file=str(bad))
    assert caught.value.field == "multilabel"
    with pytest.raises(ConfigError, match="at least two"):
        LLMLabel(labels=["only"])
    with pytest.raises(ConfigError, match="twice"):
        LLMLabel(labels=["Spam", "spam"])
    with pytest.raises(ConfigError, match="single-label"):
        LLMLabel(labels=TOPICS, multi_label=True, logprobs=True)
    with pytest.raises(ValueError, match="exactly one"):
        LLMLabel(labels=TOPICS, schema_file=str(good))


def test_shipped_gold_set_is_balanced() -> None:
    from synthaug.io import data_file

    rows = [json.loads(line) for line in
            data_file("llm_labeling_sentiment.jsonl").read_text().splitlines()]
    assert len(rows) >= 40 and {r["gold"] for r in rows} == set(SENTIMENT)
