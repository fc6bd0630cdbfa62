"""EDA (SR, RI, RS, RD), character noise and symbol tuning: each mechanism, seeding, labels."""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from synthaug.errors import ConfigError, StepError
from synthaug.records import Record
from synthaug.steps.augment import eda as eda_mod
from synthaug.steps.augment.eda import EDA, STOP_WORDS, key, synonyms
from synthaug.steps.augment.noise import NEIGHBOURS, CharNoise, add_noise
from synthaug.steps.augment.symbols import WORDS, SymbolTuning, symbol_map
from synthaug.steps.base import AnyStep
from tests.conftest import read_jsonl, run
from tests.recipe_helpers import a_context, recipe_pipeline

SENTENCE = ("the quick brown fox jumps over the lazy dog while a happy child watches "
            "the big red barn near the old river")


def records(*texts: str, label: str = "positive") -> list[Record]:
    return [{"text": t, "label": label, "_meta": {"id": f"r{i}"}} for i, t in enumerate(texts)]


def run_step(step: AnyStep, rows: list[Record], seed: int = 0) -> list[Record]:
    ctx = a_context(seed)

    async def stream() -> AsyncIterator[Record]:
        for row in rows:
            yield row

    async def collect() -> list[Record]:
        return [r async for r in step.run(stream(), ctx)]

    return asyncio.run(collect())


def texts_of(out: list[Record], op: str) -> list[list[str]]:
    return [r["text"].split() for r in out if r["augmentation"]["op"] == op]


# -- EDA -------------------------------------------------------------------------------------
def aligned(original: list[str], words: list[str], replaced: list[str]) -> bool:
    """Whether `words` is `original` with some non-stop words each replaced by one of their
    WordNet synonyms (possibly of several words); the replaced words go to `replaced`."""
    if not original:
        return not words
    head, rest = original[0], original[1:]
    if words[:1] == [head] and aligned(rest, words[1:], replaced):
        return True
    if head in STOP_WORDS:
        return False
    for synonym in synonyms(head):
        size = len(synonym.split())
        if words[:size] == synonym.split() and aligned(rest, words[size:], replaced):
            replaced.append(head)
            return True
    return False


def test_synonym_replacement_changes_only_non_stop_words_to_wordnet_synonyms() -> None:
    out = run_step(EDA(operations=["sr"], n_aug=20, alpha_sr=0.2), records(SENTENCE))
    original = SENTENCE.split()
    n = int(0.2 * len(original))
    variants = texts_of(out, "sr")
    assert len(variants) == 20
    for words in variants:
        replaced: list[str] = []
        assert aligned(original, words, replaced), words
        assert 1 <= len(set(replaced)) <= n


def test_random_insertion_adds_synonyms_of_non_stop_words() -> None:
    out = run_step(EDA(operations=["ri"], n_aug=10, alpha_ri=0.1), records(SENTENCE))
    n = max(1, int(0.1 * len(SENTENCE.split())))
    sources = {w for w in SENTENCE.split() if w not in STOP_WORDS}
    allowed = {s for w in sources for s in synonyms(w)}
    for words in texts_of(out, "ri"):
        # the original words stay in order; what is added is a synonym of a content word
        rest = list(words)
        for w in SENTENCE.split():
            i = rest.index(w)
            del rest[i]
        assert rest and " ".join(rest) != ""
        inserted = " ".join(rest)
        assert sum(len(s.split()) for s in allowed if s in inserted) >= 1
        assert all(any(r in s.split() for s in allowed) for r in rest), rest
        assert n <= len(rest)


def test_random_swap_keeps_the_multiset_of_words() -> None:
    out = run_step(EDA(operations=["rs"], n_aug=10), records(SENTENCE))
    swaps = texts_of(out, "rs")
    assert len(swaps) == 10
    for words in swaps:
        assert Counter(words) == Counter(SENTENCE.split())
    assert any(words != SENTENCE.split() for words in swaps)


def test_random_deletion_rate_is_about_p() -> None:
    long_text = " ".join(f"w{i}" for i in range(2000))
    out = run_step(EDA(operations=["rd"], n_aug=5, p_rd=0.3), records(long_text))
    for words in texts_of(out, "rd"):
        rate = 1 - len(words) / 2000
        assert 0.26 < rate < 0.34, rate
        assert set(words) <= set(long_text.split())


def test_n_aug_outputs_spread_over_operations_and_label_kept() -> None:
    out = run_step(EDA(n_aug=16), records(SENTENCE, "a short second sentence about cats"))
    for rid in ("r0", "r1"):
        mine = [r for r in out if r["_meta"]["parents"] == [rid]]
        assert len(mine) == 17  # 16 variants and the original
        ops = Counter(r["augmentation"]["op"] for r in mine)
        assert ops["original"] == 1 and set(ops) == {"original", "sr", "ri", "rs", "rd"}
        assert max(ops[o] for o in ["sr", "ri", "rs", "rd"]) <= 5  # spread evenly
    assert {r["label"] for r in out} == {"positive"}
    no_original = run_step(EDA(n_aug=4, keep_original=False), records(SENTENCE))
    assert len(no_original) == 4 and all(r["augmentation"]["op"] != "original"
                                         for r in no_original)


def test_same_seed_same_variants_other_seed_other_variants() -> None:
    rows = records(SENTENCE)
    first = [r["text"] for r in run_step(EDA(n_aug=8), rows, seed=1)]
    again = [r["text"] for r in run_step(EDA(n_aug=8), rows, seed=1)]
    other = [r["text"] for r in run_step(EDA(n_aug=8), rows, seed=2)]
    assert first == again
    assert first != other


def test_punctuation_and_capitals_survive_replacement() -> None:
    assert key("Happy,") == "happy"
    out = run_step(EDA(operations=["sr"], n_aug=5, alpha_sr=0.5),
                   records("Happy children laugh loudly."))
    for r in out[1:]:
        assert r["text"][0].isupper() and r["text"].endswith(".")


def test_missing_wordnet_fails_before_any_work(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "wn", None)  # import wn raises ImportError
    eda_mod._wordnet.cache_clear()
    pipeline = recipe_pipeline("eda", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"synthaug\[augment\]"):
        run(pipeline, tmp_path / "out")
    assert not (tmp_path / "out" / "records.jsonl").exists()
    # swap and deletion need no WordNet
    EDA(operations=["rs", "rd"]).prepare()
    eda_mod._wordnet.cache_clear()


def test_recipe_seed_changes_output_and_rerun_repeats(tmp_path: Path) -> None:
    def texts(seed: int, folder: str) -> list[str]:
        pipeline = recipe_pipeline("eda", "http://127.0.0.1:9")
        pipeline.seed = seed  # what `--seed` sets
        run(pipeline, tmp_path / folder)
        return [r["text"] for r in read_jsonl(tmp_path / folder / "records.jsonl")]

    first, again, other = texts(1, "a"), texts(1, "b"), texts(2, "c")
    assert len(first) == 20 * 17
    assert first == again and first != other


# -- character noise -------------------------------------------------------------------------
def test_keyboard_typos_use_neighbouring_keys() -> None:
    assert set(NEIGHBOURS["g"]) == set("bfhtvy")
    text = "the quick brown fox jumps over the lazy dog " * 20
    noisy, counts = add_noise(text, 0.2, ["keyboard"], random.Random(0))
    assert len(noisy) == len(text) and counts["keyboard"] > 50
    diffs = [(a, b) for a, b in zip(text, noisy, strict=True) if a != b]
    assert len(diffs) <= counts["keyboard"]
    assert all(b in NEIGHBOURS[a] for a, b in diffs)


def test_insert_delete_swap_change_length_and_letters_as_expected() -> None:
    text = "abcdefghij" * 200
    longer, c1 = add_noise(text, 0.1, ["insert"], random.Random(1))
    assert len(longer) == len(text) + c1["insert"] and c1["insert"] > 100
    shorter, c2 = add_noise(text, 0.1, ["delete"], random.Random(1))
    assert len(shorter) == len(text) - c2["delete"]
    assert 0.07 < c2["delete"] / len(text) < 0.13
    swapped, c3 = add_noise(text, 0.1, ["swap"], random.Random(1))
    assert Counter(swapped) == Counter(text) and swapped != text and c3["swap"] > 50


def test_char_noise_step_is_seeded_and_keeps_label() -> None:
    rows = records(SENTENCE)
    first = run_step(CharNoise(rate=0.1, n_aug=3), rows, seed=5)
    again = run_step(CharNoise(rate=0.1, n_aug=3), rows, seed=5)
    other = run_step(CharNoise(rate=0.1, n_aug=3), rows, seed=6)
    assert len(first) == 3 and len({r["text"] for r in first}) == 3
    assert [r["text"] for r in first] == [r["text"] for r in again]
    assert [r["text"] for r in first] != [r["text"] for r in other]
    assert all(r["label"] == "positive" and r["text"] != SENTENCE for r in first)


# -- symbol tuning ---------------------------------------------------------------------------
def tasks() -> list[Record]:
    rows: list[dict[str, Any]] = []
    for i in range(9):
        rows.append({"task": "sentiment", "text": f"review {i}",
                     "label": "positive" if i % 2 else "negative"})
        rows.append({"task": "topic", "text": f"news {i}", "label": ["sports", "science",
                                                                      "business"][i % 3]})
    return [{**r, "_meta": {"id": f"t{i}"}} for i, r in enumerate(rows)]


def test_symbol_tuning_prompt_uses_the_mapping_and_leaks_no_label() -> None:
    out = run_step(SymbolTuning(shots_per_class=2), tasks())
    assert len(out) == 18
    for r in out:
        mapping = r["symbol_map"]
        labels = set(mapping)
        assert len(set(mapping.values())) == len(mapping)  # distinct symbols
        assert not {s.lower() for s in mapping.values()} & {x.lower() for x in labels}
        assert r["completion"] == mapping[r["label"]]
        for label in labels:
            assert label not in r["prompt"]
        blocks = r["prompt"].split("\n\n")
        assert blocks[-1] == f"Input: {r['text']}\nOutput:"
        shown = [b.split("\nOutput: ")[1] for b in blocks[:-1]]
        assert Counter(shown) == Counter({s: 2 for s in mapping.values()})
        # each exemplar shows the symbol of its own record's label
        by_text = {x["text"]: x["label"] for x in tasks()}
        for b in blocks[:-1]:
            text, symbol = b.removeprefix("Input: ").split("\nOutput: ")
            assert mapping[by_text[text]] == symbol and by_text[text] in labels
            assert text != r["text"]


def test_symbol_mapping_per_prompt_or_per_task() -> None:
    per_prompt = run_step(SymbolTuning(scope="prompt"), tasks())
    maps = [tuple(sorted(r["symbol_map"].items())) for r in per_prompt if r["task"] == "topic"]
    assert len(set(maps)) > 1  # a new arbitrary mapping for each few-shot group
    per_task = run_step(SymbolTuning(scope="task"), tasks())
    for task in ("sentiment", "topic"):
        maps = {tuple(sorted(r["symbol_map"].items())) for r in per_task if r["task"] == task}
        assert len(maps) == 1
    sentiment = next(r for r in per_task if r["task"] == "sentiment")["symbol_map"]
    topic = next(r for r in per_task if r["task"] == "topic")["symbol_map"]
    assert set(sentiment) == {"positive", "negative"}
    assert set(topic) == {"sports", "science", "business"}


def test_symbol_tuning_is_seeded() -> None:
    first = [r["prompt"] for r in run_step(SymbolTuning(), tasks(), seed=1)]
    again = [r["prompt"] for r in run_step(SymbolTuning(), tasks(), seed=1)]
    other = [r["prompt"] for r in run_step(SymbolTuning(), tasks(), seed=2)]
    assert first == again and first != other


def test_single_label_task_is_dropped_and_empty_label_rejected() -> None:
    rows = [{"task": "t", "text": "x", "label": "a", "_meta": {"id": "a"}},
            {"task": "t", "text": "y", "label": "a", "_meta": {"id": "b"}},
            {"task": "t", "text": "z", "label": " ", "_meta": {"id": "c"}}]
    ctx = a_context()

    async def stream() -> AsyncIterator[Record]:
        for row in rows:
            yield row

    async def collect() -> list[Record]:
        return [r async for r in SymbolTuning().run(stream(), ctx)]

    assert asyncio.run(collect()) == []
    kinds = Counter(kind for kind, _ in ctx.side.rows)  # type: ignore[attr-defined]
    assert kinds["dropped"] == 2 and kinds["rejects"] == 1


def test_symbols_are_distinct_and_never_a_label() -> None:
    labels = list(WORDS[:50])  # the labels take about half of the word pool
    mapping = symbol_map(labels, ["word"], random.Random(0))
    assert len(set(mapping.values())) == len(labels)
    assert not set(mapping.values()) & set(labels)
    with pytest.raises(StepError, match="too few symbols"):
        symbol_map(list(WORDS), ["word"], random.Random(0))
