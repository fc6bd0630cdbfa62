"""gpt3mix (GPT3Mix): k real examples mixed into a new one whose label is a distribution."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl
from tests.recipe_helpers import prompt_of, run_recipe

ROWS = [{"text": f"Review number {i} of the film.", "label": "positive" if i % 2 else
         "negative"} for i in range(6)]
NEW = "A bright, tender film with songs I still hum."
ASK_LABEL = "What is the sentiment of the last item?"
# the label token's alternatives: 'neg' is more likely than 'pos' for the new text
ALTERNATIVES = [{"neg": math.log(0.6), "pos": math.log(0.2), "The": math.log(0.1)}]


def scripted(asked: list[str], label_reply: Reply) -> Any:
    def answer(body: dict[str, Any]) -> Reply:
        text = prompt_of(body)
        asked.append(text)
        if ASK_LABEL in text:
            return label_reply
        return Reply(text=f"Movie review: {NEW} (Sentiment: positive)")
    return answer


def outputs(tmp: Path) -> list[dict[str, Any]]:
    """The augmentations the run made (the labelled set passes through beside them)."""
    return [r for r in read_jsonl(tmp / "out" / "records.jsonl")
            if r["augmentation"]["op"] == "mix"]


def test_the_soft_label_is_the_label_token_distribution_not_the_written_label(
        tmp_path: Path) -> None:
    asked: list[str] = []
    label = Reply(text="negative", alternatives=ALTERNATIVES)
    with FakeOpenAIServer(scripted(asked, label)) as server:
        run_recipe("gpt3mix", server, tmp_path, ROWS,
                   sets={"mix": {"count": 1, "soft": "logprobs"}})
    [made] = outputs(tmp_path)
    assert made["text"] == NEW
    assert made["soft_label"] == {"positive": 0.25, "negative": 0.75}  # 0.2 and 0.6, normalized
    assert made["label"] == "negative"  # the most probable label ...
    assert made["written_label"] == "positive"  # ... not the one the model wrote
    assert made["soft_label_by"] == "logprobs"
    label_request = next(a for a in asked if ASK_LABEL in a)
    assert f"Movie review: {NEW} (Sentiment: ?)" in label_request


def test_sampled_labels_give_the_distribution_without_logprobs(tmp_path: Path) -> None:
    asked: list[str] = []
    with FakeOpenAIServer(scripted(asked, Reply(text="negative"))) as server:
        run_recipe("gpt3mix", server, tmp_path, ROWS,
                   sets={"mix": {"count": 1, "soft": "samples", "label_samples": 4}})
    [made] = outputs(tmp_path)
    assert made["soft_label"] == {"positive": 0.0, "negative": 1.0}
    assert made["label"] == "negative" and made["written_label"] == "positive"
    assert made["soft_label_by"] == "samples"


def test_each_prompt_mixes_k_random_examples_with_their_labels(tmp_path: Path) -> None:
    asked: list[str] = []
    label = Reply(text="negative", alternatives=ALTERNATIVES)
    with FakeOpenAIServer(scripted(asked, label)) as server:
        run_recipe("gpt3mix", server, tmp_path, ROWS, sets={"mix": {"count": 6}})
    writes = [a for a in asked if ASK_LABEL not in a]
    assert len(writes) == 6
    by_text = {r["text"]: r["label"] for r in ROWS}
    pairs = set()
    for prompt in writes:
        assert "is one of 'positive' or 'negative'" in prompt
        shown = re.findall(r"Movie review: (.+?) \(Sentiment: (\w+)\)", prompt)
        assert len(shown) == 2 and all(by_text[t] == lab for t, lab in shown)
        pairs.add(frozenset(t for t, _ in shown))
    assert len(pairs) > 1  # drawn at random, not the same two each time
    made = outputs(tmp_path)
    assert all(len(r["mixed_from"]) == 2 and len(r["_meta"]["parents"]) == 2 for r in made)


def test_a_copied_example_is_dropped_and_bad_records_are_rejects(tmp_path: Path) -> None:
    rows = [*ROWS, {"text": "  ", "label": "positive"}, {"text": "Fine.", "label": "meh"}]

    def answer(body: dict[str, Any]) -> Reply:
        if ASK_LABEL in prompt_of(body):
            return Reply(text="positive", alternatives=ALTERNATIVES)
        copied = ROWS[0]["text"].upper().replace(" of", ", of")  # case and commas aside
        return Reply(text=f"Movie review: {copied} (Sentiment: negative)")

    with FakeOpenAIServer(answer) as server:
        run_recipe("gpt3mix", server, tmp_path, rows, sets={"mix": {"count": 2}})
    assert outputs(tmp_path) == []
    dropped = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert {d["reason"] for d in dropped} == {"copies an example or another augmentation"}
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert sorted((r["field"], r["line"]) for r in rejects) == [("label", 8), ("text", 7)]


def test_the_labelled_set_is_kept_beside_the_augmentations(tmp_path: Path) -> None:
    label = Reply(text="negative", alternatives=ALTERNATIVES)
    with FakeOpenAIServer(scripted([], label)) as server:
        run_recipe("gpt3mix", server, tmp_path, ROWS, sets={"mix": {"count": 2}})
    every = read_jsonl(tmp_path / "out" / "records.jsonl")
    kept = [r for r in every if r["augmentation"] == {"method": "gpt3mix", "op": "original"}]
    assert [(r["text"], r["label"]) for r in kept] == [(r["text"], r["label"]) for r in ROWS]
    assert len(outputs(tmp_path)) == 1  # the second augmentation repeats the first
    assert len(every) == len(ROWS) + 1
    with FakeOpenAIServer(scripted([], label)) as server:
        (tmp_path / "off").mkdir()
        run_recipe("gpt3mix", server, tmp_path / "off", ROWS,
                   sets={"mix": {"count": 2, "keep_original": False}})
    assert [r["augmentation"]["op"] for r in
            read_jsonl(tmp_path / "off" / "out" / "records.jsonl")] == ["mix"]


def test_a_first_label_token_shared_by_labels_falls_back_to_samples(tmp_path: Path) -> None:
    rows = [{**r, "label": "very " + r["label"]} for r in ROWS]
    # 'very' begins both labels: its mass says nothing about which one
    shared = [{"very": math.log(0.9), "The": math.log(0.05)}]
    calls: list[dict[str, Any]] = []

    def answer(body: dict[str, Any]) -> Reply:
        calls.append(body)
        if ASK_LABEL not in prompt_of(body):
            return Reply(text=f"Movie review: {NEW} (Sentiment: very positive)")
        if body.get("logprobs"):
            return Reply(text="very", alternatives=shared)
        return Reply(text="very positive")

    with FakeOpenAIServer(answer) as server:
        run_recipe("gpt3mix", server, tmp_path, rows,
                   sets={"mix": {"count": 1, "soft": "logprobs", "label_samples": 3,
                                 "labels": ["very positive", "very negative"]}})
    [made] = outputs(tmp_path)
    assert made["soft_label_by"] == "samples"
    assert made["soft_label"] == {"very positive": 1.0, "very negative": 0.0}
    assert made["label"] == "very positive"
    sampled = [c for c in calls if ASK_LABEL in prompt_of(c) and not c.get("logprobs")]
    assert len(sampled) == 1 and sampled[0]["n"] == 3 and sampled[0]["temperature"] == 1.0
