"""The `sample` step: distributions, conditional columns, constraints, people, seeds, DAG."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from synthaug.errors import ConfigError
from synthaug.pipeline import Pipeline, Recipe
from synthaug.records import Record
from synthaug.steps.context import StepContext, StepStats
from synthaug.steps.sample.step import Sample
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl, run, write_jsonl


class _Side:
    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def write(self, kind: str, row: dict[str, Any]) -> None:
        self.rows.append((kind, row))


def _ctx(seed: int = 0) -> StepContext:
    return StepContext(label="attrs", recipe="t", seed=seed, stats=StepStats("attrs"),
                       side=_Side())


def draws(columns: dict[str, Any], n: int = 4000, seed: int = 0, **options: Any) -> list[Record]:
    """`n` rows drawn from nothing by a sample step with `columns`."""
    step = Sample(columns=columns, **options)
    ctx = _ctx(seed)
    return [step.draw(None, i, ctx) for i in range(n)]


def recipe(columns: dict[str, Any], *, seed: int = 0, **options: Any) -> Pipeline:
    spec = {"name": "t", "seed": seed,
            "steps": [{"use": "sample", "name": "attrs", "with": {"columns": columns,
                                                                 **options}}]}
    return Pipeline.from_recipe(Recipe.model_validate(spec))


def column(rows: list[Record], name: str) -> list[Any]:
    return [row[name] for row in rows]


# -- distributions ---------------------------------------------------------------------------

def test_numeric_distributions_have_their_moments() -> None:
    rows = draws({
        "g": {"type": "gaussian", "mean": 10, "std": 2},
        "u": {"type": "uniform", "low": -1, "high": 3},
        "k": {"type": "uniform", "low": 1, "high": 6, "integer": True},
        "b": {"type": "bernoulli", "p": 0.3},
        "p": {"type": "poisson", "lam": 3},
        "big": {"type": "poisson", "lam": 40},  # the PTRS branch
    })
    g, u, k = column(rows, "g"), column(rows, "u"), column(rows, "k")
    assert abs(statistics.fmean(g) - 10) < 0.15 and abs(statistics.stdev(g) - 2) < 0.1
    assert min(u) >= -1 and max(u) <= 3 and abs(statistics.fmean(u) - 1) < 0.08
    assert set(k) == {1, 2, 3, 4, 5, 6} and abs(statistics.fmean(k) - 3.5) < 0.1
    assert abs(sum(column(rows, "b")) / len(rows) - 0.3) < 0.025
    for name, lam in (("p", 3), ("big", 40)):
        values = column(rows, name)
        assert all(isinstance(v, int) and v >= 0 for v in values)
        assert abs(statistics.fmean(values) - lam) < 4 * (lam / len(values)) ** 0.5
        assert abs(statistics.variance(values) - lam) < 0.12 * lam


def test_categories_follow_their_weights() -> None:
    rows = draws({"c": {"type": "category", "values": ["a", "b", "c"], "weights": [6, 3, 1]}})
    found = column(rows, "c")
    for value, share in (("a", 0.6), ("b", 0.3), ("c", 0.1)):
        assert abs(found.count(value) / len(found) - share) < 0.025


def test_a_scipy_distribution_by_name() -> None:
    rows = draws({"x": {"type": "scipy", "dist": "gamma", "params": {"a": 2.0, "scale": 3.0}},
                  "n": {"type": "scipy", "dist": "binom", "params": {"n": 10, "p": 0.2}}})
    x, n = column(rows, "x"), column(rows, "n")
    assert all(isinstance(v, float) for v in x) and all(isinstance(v, int) for v in n)
    assert abs(statistics.fmean(x) - 6.0) < 0.25 and abs(statistics.variance(x) - 18) < 2
    assert abs(statistics.fmean(n) - 2.0) < 0.08


def test_dates_and_datetimes_stay_in_range_and_cover_it() -> None:
    rows = draws({"d": {"type": "date", "start": "2024-02-01", "end": "2024-02-29"},
                  "t": {"type": "datetime", "start": "2024-01-01T00:00:00",
                        "end": "2024-01-01T01:00:00"}}, n=2000)
    days = {dt.date.fromisoformat(v) for v in column(rows, "d")}
    assert min(days) == dt.date(2024, 2, 1) and max(days) == dt.date(2024, 2, 29)
    assert len(days) == 29
    moments = [dt.datetime.fromisoformat(v) for v in column(rows, "t")]
    assert all(dt.datetime(2024, 1, 1) <= m <= dt.datetime(2024, 1, 1, 1) for m in moments)
    assert abs(statistics.fmean(m.minute for m in moments) - 29.5) < 1.5


# -- dependencies between columns -------------------------------------------------------------

def test_a_subcategory_is_drawn_from_its_parents_values() -> None:
    subs = {"fruit": ["apple", "pear"], "tool": ["saw", "drill", "file"]}
    rows = draws({"kind": {"type": "category", "values": ["fruit", "tool"]},
                  "item": {"type": "subcategory", "parent": "kind", "values": subs}}, n=1000)
    assert all(row["item"] in subs[row["kind"]] for row in rows)
    assert {row["item"] for row in rows} == {"apple", "pear", "saw", "drill", "file"}


def test_conditional_parameters_and_distributions() -> None:
    rows = draws({
        "tier": {"type": "category", "values": ["gold", "silver", "free"]},
        "spend": {"type": "gaussian", "mean": 100, "std": 5, "conditional": {
            "column": "tier", "cases": {"gold": {"mean": 500}, "silver": {"mean": 250}}}},
        "seats": {"type": "poisson", "lam": 2, "conditional": {
            "column": "tier", "cases": {"free": {"type": "category", "values": [1]}}}},
    }, n=3000)
    for tier, mean in (("gold", 500), ("silver", 250), ("free", 100)):
        group = [row for row in rows if row["tier"] == tier]
        assert abs(statistics.fmean(r["spend"] for r in group) - mean) < 1.0
    assert {row["seats"] for row in rows if row["tier"] == "free"} == {1}
    assert len({row["seats"] for row in rows if row["tier"] == "gold"}) > 3


def test_constraints_hold_by_redrawing_whole_rows() -> None:
    columns = {"start": {"type": "date", "start": "2024-01-01", "end": "2024-12-31"},
               "end": {"type": "date", "start": "2024-01-01", "end": "2024-12-31"},
               "low": {"type": "uniform", "low": 0, "high": 10, "integer": True},
               "high": {"type": "uniform", "low": 0, "high": 10, "integer": True}}
    rows = draws(columns, n=1000, constraints=["end > start", "high >= low"])
    assert all(r["end"] > r["start"] and r["high"] >= r["low"] for r in rows)
    # whole-row rejection keeps the joint law: P(high >= low) = 66/121, the ordered pairs
    # are then uniform, so low's mean is sum over pairs / 66 = 10/3
    assert abs(statistics.fmean(column(rows, "low")) - 10 / 3) < 0.25


def test_an_unmeetable_constraint_becomes_a_failure_naming_it(tmp_path: Path) -> None:
    pipeline = recipe({"x": {"type": "uniform", "low": 0, "high": 1}}, count=3,
                      constraints=["x > 2"], max_tries=5)
    state = run(pipeline, tmp_path / "out")
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert state.written == 0 and len(failures) == 3
    assert "constraint 'x > 2' still false after 5 draws" in failures[0]["reason"]


def test_a_cycle_between_columns_is_refused_naming_it() -> None:
    cyclic = {"a": {"type": "subcategory", "parent": "b", "values": {"x": ["y"]}},
              "b": {"type": "gaussian", "mean": 0, "std": 1,
                    "conditional": {"column": "a", "cases": {"y": {"mean": 3}}}}}
    with pytest.raises(ConfigError) as found:
        recipe(cyclic, count=2)
    assert "cycle: a -> b -> a" in str(found.value) and found.value.field == "columns"


@pytest.mark.parametrize(("columns", "field", "words"), [
    ({"x": {"type": "gausian", "mean": 0, "std": 1}}, "columns.x", "gausian"),
    ({"x": {"type": "gaussian", "mean": 0, "std": -1}}, "columns.x.gaussian.std", "greater"),
    ({"x": {"type": "scipy", "dist": "nosuch"}}, "columns.x.scipy", "no distribution"),
    ({"x": {"type": "scipy", "dist": "beta", "params": {"a": 2}}}, "columns.x.scipy",
     "bad parameters"),
    ({"x": {"type": "scipy", "dist": "beta", "params": {"a": -1, "b": 2}}}, "columns.x.scipy",
     "bad parameters"),
    ({"x": {"type": "uniform", "low": 0, "high": 1}}, "constraints", "invalid syntax"),
    ({"x": {"type": "category", "values": ["a"], "weights": [1, 2]}}, "columns.x.category",
     "2 weights for 1 values"),
    ({"x": {"type": "person", "locale": "xx_YY"}}, "columns.x.person", "no locale"),
    ({"k": {"type": "category", "values": ["a", "b"]},
      "s": {"type": "subcategory", "parent": "k", "values": {"a": ["1"]}}}, "columns",
     "no subcategories for ['b']"),
])
def test_bad_columns_fail_when_the_recipe_loads(columns: dict[str, Any], field: str,
                                                words: str) -> None:
    with pytest.raises(ConfigError) as found:
        recipe(columns, count=1, constraints=["x >"] if field == "constraints" else [])
    assert found.value.step == "attrs" and found.value.field == field
    assert words in found.value.message


def test_a_constraint_or_parent_that_nothing_provides_fails_before_any_call(
        tmp_path: Path) -> None:
    pipeline = recipe({"x": {"type": "uniform", "low": 0, "high": 1}}, count=2,
                      constraints=["x < limit"])
    with pytest.raises(ConfigError) as found:
        run(pipeline, tmp_path / "out")
    assert found.value.step == "attrs" and found.value.field == "limit"
    assert not (tmp_path / "out").exists()


# -- people ------------------------------------------------------------------------------------

def test_people_follow_their_locale_and_are_consistent() -> None:
    from faker.providers.address.de_DE import Provider as German

    fields = ["name", "first_name", "last_name", "sex", "age", "birth_date", "city", "email"]
    rows = draws({"de": {"type": "person", "locale": "de_DE", "fields": fields},
                  "jp": {"type": "person", "locale": "ja_JP", "fields": ["name", "city"]}},
                 n=200)
    as_of = dt.date(2025, 1, 1)
    for row in rows:
        person = row["de"]
        assert person["city"] in German.cities
        assert person["name"] == f"{person['first_name']} {person['last_name']}"
        born = dt.date.fromisoformat(person["birth_date"])
        age = as_of.year - born.year - ((as_of.month, as_of.day) < (born.month, born.day))
        assert age == person["age"] and 18 <= age <= 85
        assert person["email"].split("@")[0].replace(".", "").isascii()
        assert any("\u3040" <= ch <= "\u9fff" for ch in row["jp"]["name"])  # kana or kanji
    assert {row["de"]["sex"] for row in rows} == {"female", "male"}


def test_text_columns_are_strings_for_prompt_templates() -> None:
    rows = draws({"n": {"type": "uniform", "low": 1, "high": 9, "integer": True, "text": True},
                  "p": {"type": "person", "fields": ["name", "age"], "text": True}}, n=20)
    assert all(isinstance(r["n"], str) and r["n"].isdigit() for r in rows)
    assert all(isinstance(r["p"]["age"], str) for r in rows)


# -- seeds and records ------------------------------------------------------------------------

COLUMNS = {"c": {"type": "category", "values": list("abcdefgh")},
           "g": {"type": "gaussian", "mean": 0, "std": 1},
           "who": {"type": "person", "locale": "fr_FR", "fields": ["name", "city"]}}


def _values(path: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "_meta"} for r in read_jsonl(path)]


def test_same_seed_same_records_whatever_the_count(tmp_path: Path) -> None:
    run(recipe(COLUMNS, count=10), tmp_path / "a")
    run(recipe(COLUMNS, count=5), tmp_path / "b")
    run(recipe(COLUMNS, count=10, seed=1), tmp_path / "c")
    first, second, other = (_values(tmp_path / n / "records.jsonl") for n in "abc")
    assert len(first) == 10 and first[:5] == second
    assert sum(a != b for a, b in zip(first, other, strict=True)) >= 9
    reordered = dict(reversed(COLUMNS.items()))  # the order of columns in the file
    run(recipe(reordered, count=10), tmp_path / "d")
    assert _values(tmp_path / "d" / "records.jsonl") == first


def test_columns_are_added_to_each_input_record_by_its_id(server: FakeOpenAIServer,
                                                          tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"q": f"question {i}"} for i in range(8)])
    spec = {"name": "t", "backends": {"default": {"use": "openai", "with": {
        "base_url": server.url, "model": "m", "concurrency": 1}}},
            "steps": [{"use": "sample", "name": "attrs",
                       "with": {"columns": COLUMNS, "per_record": 2}},
                      {"use": "text-generation", "with": {"template": "{q} {c}"}}]}
    run(Pipeline.from_recipe(Recipe.model_validate(spec)), tmp_path / "one", data)
    spec["backends"]["default"]["with"]["concurrency"] = 8  # type: ignore[index]
    run(Pipeline.from_recipe(Recipe.model_validate(spec)), tmp_path / "many", data, limit=4)

    def by_id(name: str) -> dict[str, Any]:
        return {json.dumps(r["_meta"]["parents"]): (r["q"], r["c"], r["g"], r["who"])
                for r in read_jsonl(tmp_path / name / "records.jsonl")}

    one, many = by_id("one"), by_id("many")
    assert len(one) == 16 and len(many) == 8
    assert all(one[key] == value for key, value in many.items())
    assert len({value[1:3] for value in one.values()}) == 16  # the two samples differ


# -- count only from nothing -----------------------------------------------------------------

LEVEL = {"level": {"type": "uniform", "low": 1, "high": 5, "integer": True}}


def test_count_with_when_is_refused_so_unmatched_records_are_not_replaced() -> None:
    spec = {"name": "t", "steps": [{"use": "sample", "name": "attrs", "when": "x > 100",
                                    "with": {"count": 5, "columns": LEVEL}}]}
    with pytest.raises(ConfigError) as found:
        Pipeline.from_recipe(Recipe.model_validate(spec))
    assert found.value.step == "attrs" and found.value.field == "when"
    assert "`count` makes records from nothing" in found.value.message


def test_count_after_another_step_is_refused_when_loaded(tmp_path: Path) -> None:
    spec = {"name": "t", "steps": [
        {"use": "length-filter", "name": "long", "with": {"field": "text", "min_words": 50}},
        {"use": "sample", "name": "attrs", "with": {"count": 5, "columns": LEVEL}}]}
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "short"}, {"text": "also short"}])
    with pytest.raises(ConfigError) as found:
        run(Pipeline.from_recipe(Recipe.model_validate(spec)), tmp_path / "out", data)
    assert found.value.step == "attrs" and found.value.field == "count"
    assert "only the recipe's first step" in found.value.message
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_sample_under_when_adds_columns_to_matching_records_only(tmp_path: Path) -> None:
    spec = {"name": "t", "steps": [{"use": "sample", "name": "attrs", "when": "x > 100",
                                    "with": {"columns": LEVEL}}]}
    data = write_jsonl(tmp_path / "in.jsonl", [{"x": 1}, {"x": 2}, {"x": 200}])
    state = run(Pipeline.from_recipe(Recipe.model_validate(spec)), tmp_path / "out", data)
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert state.status == "complete" and len(records) == 3
    assert sorted((r["x"], "level" in r) for r in records) == [(1, False), (2, False),
                                                               (200, True)]
