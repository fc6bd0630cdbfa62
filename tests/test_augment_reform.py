"""Reformation recipes: ChatAug paraphrases with a diversity filter, WRAP rephrasing in four
styles over chunks with a 1:1 real mix, back-translation with a round-trip fidelity filter."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from synthaug.errors import ConfigError
from synthaug.records import Record
from synthaug.steps.augment.backtranslate import RoundTripOptions, RoundTripTranslate
from synthaug.steps.augment.paraphrase import Bounds, screen
from synthaug.steps.augment.rephrase import (
    WrapChunk,
    chunk_text,
    count_tokens,
    real_copies,
    rephrased,
)
from synthaug.steps.generate.sampling import load_data
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl
from tests.recipe_helpers import a_context, manifest, prompt_of, run_recipe

SOURCE = "The battery died after two hours and the charger stopped working."
GOOD_1 = "After only two hours the battery was dead, and the charger quit working too."
GOOD_2 = "Two hours in, the battery ran out and the charger no longer worked."
NEAR_1 = "After just two hours the battery was dead, and the charger quit working too."
CLOSE = "the battery died after 2 hours and the charger stopped working"
OFF_TOPIC = "My phone is great and I love the camera."
SEVENTH = "The battery lasted just two hours, and then the charger broke as well."


def outputs(tmp_path: Path) -> list[Record]:
    return read_jsonl(tmp_path / "out" / "records.jsonl")


def dropped(tmp_path: Path, step: str) -> dict[str, int]:
    found: dict[str, int] = manifest(tmp_path)["steps"][step]["dropped"]
    return found


# -- ChatAug ---------------------------------------------------------------------------------
def paraphrases(body: dict[str, Any]) -> Reply:
    assert "Write 6 different rewordings" in prompt_of(body)
    items = [SOURCE, CLOSE, GOOD_1, OFF_TOPIC, GOOD_2, NEAR_1, SEVENTH]
    return Reply(text="\n".join(f"{i}. {text}" for i, text in enumerate(items, 1)))


def test_chataug_keeps_only_diverse_faithful_paraphrases(server: FakeOpenAIServer,
                                                         tmp_path: Path) -> None:
    server.responder = paraphrases
    run_recipe("chataug", server, tmp_path, [{"text": SOURCE, "label": "hardware"}])
    out = outputs(tmp_path)
    made = [r["text"] for r in out if r["augmentation"]["op"] == "paraphrase"]
    assert made == [GOOD_1, GOOD_2]  # the 7th item is beyond the k = 6 asked
    assert [r["text"] for r in out if r["augmentation"]["op"] == "original"] == [SOURCE]
    assert dropped(tmp_path, "paraphrase") == {
        "same as the original": 1, "too close to the original": 1, "semantic drift": 1,
        "too close to another paraphrase": 1}
    sims = [r["augmentation"]["similarity"] for r in out if r["text"] in made]
    assert all(0.5 <= s <= 0.95 for s in sims)


def test_chataug_carries_the_label_and_the_parent(server: FakeOpenAIServer,
                                                  tmp_path: Path) -> None:
    server.responder = paraphrases
    rows = [{"text": SOURCE, "label": "hardware", "id": 7}]
    run_recipe("chataug", server, tmp_path, rows)
    out = outputs(tmp_path)
    source_id = {r["_meta"]["parents"][0] for r in out}
    assert len(out) == 3 and len(source_id) == 1
    assert all(r["label"] == "hardware" and r["id"] == 7 for r in out)
    assert all(r["augmentation"].get("original", SOURCE) == SOURCE for r in out)


def test_chataug_rejects_a_record_without_a_label(server: FakeOpenAIServer,
                                                  tmp_path: Path) -> None:
    server.responder = paraphrases
    with pytest.raises(ConfigError, match="field label"):  # no record has one
        run_recipe("chataug", server, tmp_path, [{"text": SOURCE}])
    run_recipe("chataug", server, tmp_path, [{"text": SOURCE, "label": "a"}, {"text": SOURCE}])
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert [(r["field"], r["line"]) for r in rejects] == [("label", 2)]
    assert len(server.calls) == 1


def test_chataug_drops_a_repeated_candidate_as_a_duplicate(server: FakeOpenAIServer,
                                                          tmp_path: Path) -> None:
    twice = [GOOD_1, GOOD_1.upper() + "!", GOOD_2]  # the same rewording, case and stop aside
    server.enqueue("\n".join(f"{i}. {text}" for i, text in enumerate(twice, 1)))
    run_recipe("chataug", server, tmp_path, [{"text": SOURCE, "label": "hardware"}])
    made = [r["text"] for r in outputs(tmp_path) if r["augmentation"]["op"] == "paraphrase"]
    assert made == [GOOD_1, GOOD_2]
    assert dropped(tmp_path, "paraphrase") == {"duplicate": 1}
    no_embedder = screen(SOURCE, twice, None, Bounds(None, None, None))
    assert [v.reason for v in no_embedder] == [None, "duplicate", None]


def test_chataug_refuses_n_above_one_before_any_call(server: FakeOpenAIServer,
                                                     tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"step paraphrase, field n: .*ask for more with k"):
        run_recipe("chataug", server, tmp_path, [{"text": SOURCE, "label": "hardware"}],
                   sets={"paraphrase": {"n": 3}})
    assert server.calls == []


# -- WRAP ------------------------------------------------------------------------------------
CUES = {"very young child": "easy", "Wikipedia": "medium", "learned scholar": "hard",
        "'Question:'": "qa"}


def passage_of(body: dict[str, Any]) -> str:
    return prompt_of(body).split("Passage:\n", 1)[1]


def styled(body: dict[str, Any], qa_ok: bool = True) -> Reply:
    text = prompt_of(body)
    style = next(s for cue, s in CUES.items() if cue in text)
    if style == "qa":
        return Reply(text="Question: What is it about?\nAnswer: It explains the passage."
                     if qa_ok else "It explains the passage.")
    return Reply(text=f"[{style}] {passage_of(body)[:40]}")


def test_wrap_chunks_long_documents_to_at_most_300_tokens() -> None:
    docs = [d["text"] for d in load_data("wrap_documents.jsonl")]
    assert sum(count_tokens(d) > 300 for d in docs) >= 2  # the shipped corpus needs chunking
    for doc in docs:
        chunks = chunk_text(doc, 300)
        assert all(count_tokens(c) <= 300 for c in chunks)
        assert " ".join(chunks).split() == doc.split()  # nothing lost, order kept
        assert len(chunks) == (1 if count_tokens(doc) <= 300 else 2)


def test_wrap_chunk_splits_an_over_long_sentence_at_words() -> None:
    sentence = " ".join(f"w{i}" for i in range(50)) + "."
    chunks = chunk_text(sentence, 20)
    assert [count_tokens(c) for c in chunks] == [20, 20, 11]
    assert " ".join(chunks) == sentence


def test_wrap_rephrases_every_chunk_in_four_styles_and_mixes_real_one_to_one(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = styled
    run_recipe("wrap", server, tmp_path, None)
    out = outputs(tmp_path)
    docs = load_data("wrap_documents.jsonl")
    chunks = sum(len(chunk_text(d["text"], 250)) for d in docs)  # the recipe's limit
    assert chunks > len(docs)
    assert len(server.calls) == 4 * chunks
    assert all(count_tokens(passage_of(body)) <= 250 for body in server.calls)
    by_chunk: dict[str, Counter[str]] = {}
    for record in out:
        by_chunk.setdefault(record["_meta"]["parents"][0], Counter())[record["style"]] += 1
    assert len(by_chunk) == chunks
    for styles in by_chunk.values():
        assert styles == Counter({"real": 4, "easy": 1, "medium": 1, "hard": 1, "qa": 1})
    real = [r for r in out if r["style"] == "real"]
    assert all("url" in r and "chunk" in r for r in out)
    assert {r["text"] for r in real} == {passage_of(b) for b in server.calls}


def test_wrap_drops_a_qa_rephrase_without_questions(server: FakeOpenAIServer,
                                                    tmp_path: Path) -> None:
    server.responder = lambda body: styled(body, qa_ok=False)
    run_recipe("wrap", server, tmp_path, [{"text": "Bees make honey. They live in hives."}])
    styles = Counter(r["style"] for r in outputs(tmp_path))
    assert styles == Counter({"real": 3, "easy": 1, "medium": 1, "hard": 1})
    assert dropped(tmp_path, "rephrase") == {"qa rephrase without a Question/Answer pair": 1}


def test_wrap_keeps_a_chunk_once_when_all_its_rephrases_are_dropped(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda body: Reply(text="") if "Bees" in passage_of(body) \
        else styled(body)
    rows = [{"text": "Bees make honey. They live in hives."}, {"text": "Ants dig tunnels."}]
    run_recipe("wrap", server, tmp_path, rows)
    out = outputs(tmp_path)
    # the bees chunk: every rephrase empty (dropped), the real chunk still comes out once
    assert [(r["style"], r["text"]) for r in out if "Bees" in r["text"]] == [
        ("real", "Bees make honey. They live in hives.")]
    assert Counter(r["style"] for r in out if "Bees" not in r["text"]) == Counter(
        {"real": 4, "easy": 1, "medium": 1, "hard": 1, "qa": 1})
    assert dropped(tmp_path, "rephrase") == {"empty rephrase": 4}


def test_wrap_real_share_and_reply_cleanup() -> None:
    assert [real_copies(1.0, n, 0.99) for n in (0, 3, 4)] == [1, 3, 4]  # 0: kept once
    assert real_copies(0.0, 0, 0.0) == 0  # real_ratio 0: no real data at all
    assert real_copies(0.25, 4, 0.99) == 1  # each real chunk once beside four rephrases
    assert [real_copies(0.3, 1, d) for d in (0.1, 0.5)] == [1, 0]  # a seeded draw rounds
    assert rephrased("Here's the passage rewritten simply:\n\nBees make honey.") == \
        "Bees make honey."
    assert rephrased("Question: Who?\nAnswer: Bees.") == "Question: Who?\nAnswer: Bees."


def test_wrap_chunk_streams_one_document_at_a_time() -> None:
    pulled: list[int] = []

    async def documents() -> AsyncIterator[Record]:
        for i in range(3):
            pulled.append(i)
            yield {"text": f"Document {i}. " * 5, "_meta": {"id": f"d{i}"}}

    async def first() -> Record:
        return await anext(WrapChunk(max_tokens=300).run(documents(), a_context()))

    assert asyncio.run(first())["text"].startswith("Document 0.") and pulled == [0]


# -- back-translation ------------------------------------------------------------------------
PIVOT_BACK = {"French": GOOD_1, "German": SOURCE, "Chinese": OFF_TOPIC, "Spanish": GOOD_1}


def round_trips(body: dict[str, Any]) -> Reply:
    text = prompt_of(body)
    found = re.search(r"Translate this (\w+) text into (\w+)\.", text)
    assert found
    source, target = found.groups()
    passage = text.rsplit("\n\n", 1)[1]
    if source == "English":  # forward: a pivot text (Italian: left untranslated)
        return Reply(text=passage if target == "Italian" else f"<{target}> {passage}")
    return Reply(text=f"Translation: {PIVOT_BACK.get(source, passage)}")


PIVOTS = ["French", "German", "Chinese", "Spanish", "Italian"]


def test_back_translation_keeps_only_faithful_round_trips(server: FakeOpenAIServer,
                                                          tmp_path: Path) -> None:
    server.responder = round_trips
    run_recipe("back-translation-augment", server, tmp_path,
               [{"text": SOURCE, "label": "negative"}], sets={"round-trip": {"pivots": PIVOTS}})
    out = outputs(tmp_path)
    kept = [r for r in out if r["augmentation"]["op"] == "round-trip"]
    assert [(r["augmentation"]["pivot"], r["text"]) for r in kept] == [("French", GOOD_1)]
    assert 30 <= kept[0]["augmentation"]["chrf"] <= 90
    assert dropped(tmp_path, "round-trip") == {
        "same as the original": 1, "unfaithful round trip (chrF)": 1, "duplicate": 1,
        "pivot not translated": 1}
    assert all(r["label"] == "negative" for r in out) and len(out) == 2


def test_back_translation_goes_through_the_pivot_text(server: FakeOpenAIServer,
                                                      tmp_path: Path) -> None:
    server.responder = round_trips
    run_recipe("back-translation-augment", server, tmp_path,
               [{"text": SOURCE, "label": "negative"}])
    backs = [prompt_of(b) for b in server.calls if "text into English" in prompt_of(b)]
    assert len(backs) == 3 and len(server.calls) == 6
    for pivot in ("French", "German", "Chinese"):
        asked = next(b for b in backs if f"this {pivot} text" in b)
        assert asked.endswith(f"<{pivot}> {SOURCE}")  # the pivot text, not the source
    kept = next(r for r in outputs(tmp_path) if r["augmentation"]["op"] == "round-trip")
    assert kept["augmentation"]["pivot_text"] == f"<French> {SOURCE}"
    assert len(kept["_meta"]["calls"]) == 2 and len(kept["_meta"]["parents"]) == 1


def test_back_translation_cosine_guard_and_options() -> None:
    step = RoundTripTranslate(embedder=None)
    score, reason = step.verdict(SOURCE, "<French> x", GOOD_1, set(), similarity=0.2)
    assert reason == "unfaithful round trip (cosine)" and score > 30
    assert step.verdict(SOURCE, "<French> x", GOOD_1, set(), similarity=0.9)[1] is None
    with pytest.raises(ValidationError, match="pivot must differ"):
        RoundTripOptions(pivots=["english"])
    with pytest.raises(ValidationError, match="min_chrf"):
        RoundTripOptions(min_chrf=95)
