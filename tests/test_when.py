"""`when:` on a recipe step: skipped records pass through unchanged and cost no call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from synthaug.cli import app
from synthaug.errors import ConfigError, RecordError
from synthaug.expressions import Expression, ExpressionError
from synthaug.pipeline import Pipeline, Recipe
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl, run, write_jsonl

ROWS = [{"text": "short", "lang": "en"}, {"text": "x" * 300, "lang": "en"},
        {"text": "y" * 300, "lang": "fr"}, {"text": "z" * 250, "lang": "en"}]
CONDITION = "len(text) > 200 and lang == 'en'"


def spec(url: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "w", "backends": {"default": {"use": "openai", "with": {
        "base_url": url, "model": "m"}}}, "steps": steps}


def generate(when: str | None = CONDITION, **more: Any) -> dict[str, Any]:
    step = {"use": "text-generation", "name": "summarize",
            "with": {"template": "Summarize: {text}", "output_field": "summary"}, **more}
    return {**step, "when": when} if when else step


def pipeline(url: str, *steps: dict[str, Any]) -> Pipeline:
    return Pipeline.from_recipe(Recipe.model_validate(spec(url, list(steps))))


def test_records_that_do_not_match_pass_through_with_no_call(server: FakeOpenAIServer,
                                                             tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    state = run(pipeline(server.url, generate()), tmp_path / "out", data)
    asked = [call["messages"][-1]["content"] for call in server.calls]
    assert sorted(asked) == sorted(f"Summarize: {c * n}" for c, n in (("x", 300), ("z", 250)))
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert state.status == "complete" and len(records) == 4
    skipped = [r for r in records if "summary" not in r]
    assert sorted(r["text"] for r in skipped) == ["short", "y" * 300]
    assert all(r["_meta"]["skipped"] == ["summarize"] and r["_meta"]["step"] == "input"
               for r in skipped)
    made = [r for r in records if "summary" in r]
    assert all("skipped" not in r["_meta"] and r["_meta"]["step"] == "summarize" for r in made)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    step = manifest["steps"]["summarize"]
    assert step["in"] == 4 and step["out"] == 4 and step["llm_samples"] == 2
    assert step["notes"]["skipped (when)"] == 2 and step["dropped"] == {}
    assert manifest["config"]["steps"][0]["when"] == CONDITION


def test_a_rerun_resumes_and_a_changed_condition_is_another_run(server: FakeOpenAIServer,
                                                                tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    run(pipeline(server.url, generate()), tmp_path / "out", data)
    again = run(pipeline(server.url, generate()), tmp_path / "out", data)
    assert again.written == 0 and again.resumed == 4 and len(server.calls) == 2
    with pytest.raises(ConfigError, match="different run: step 'summarize'"):
        run(pipeline(server.url, generate("lang == 'fr'")), tmp_path / "out", data)


def test_a_global_step_builds_its_state_from_matching_records(server: FakeOpenAIServer,
                                                              tmp_path: Path) -> None:
    rows = [{"text": "same", "lang": lang, "n": i}
            for i, lang in enumerate(["en", "en", "fr", "fr"])]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    dedup = {"use": "exact-dedup", "name": "dedup", "with": {"fields": ["text"]},
             "when": "lang == 'en'"}
    state = run(pipeline(server.url, dedup), tmp_path / "out", data)
    kept = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert sorted(r["lang"] for r in kept) == ["en", "fr", "fr"]
    assert state.steps[0].dropped and sum(state.steps[0].dropped.values()) == 1


def test_a_generator_step_refuses_when(server: FakeOpenAIServer) -> None:
    combos = {"use": "combinations", "name": "combos", "with": {"axes": {"a": ["1"]}},
              "when": "True"}
    with pytest.raises(ConfigError) as found:
        pipeline(server.url, combos)
    assert found.value.step == "combos" and found.value.field == "when"
    assert "Generator" in found.value.message


def test_a_field_the_condition_reads_must_exist(server: FakeOpenAIServer,
                                                tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    with pytest.raises(ConfigError) as found:
        run(pipeline(server.url, generate("langage == 'en'")), tmp_path / "out", data)
    assert found.value.step == "summarize" and found.value.field == "langage"
    assert server.calls == []


def test_a_record_the_condition_cannot_judge_is_rejected(server: FakeOpenAIServer,
                                                         tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "abc", "n": 3}, {"text": "d", "n": "x"}])
    run(pipeline(server.url, generate("n > 2")), tmp_path / "out", data)
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert len(rejects) == 1 and rejects[0]["record"]["n"] == "x"
    assert "when 'n > 2'" in rejects[0]["reason"] and len(server.calls) == 1


def test_an_invalid_condition_exits_2_naming_step_and_field(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    with FakeOpenAIServer() as server:
        for bad in ("__import__('os').system('true')", "len(text) >", "text.__class__"):
            path = tmp_path / "r.yaml"
            path.write_text(yaml.safe_dump(spec(server.url, [generate(bad)])))
            result = CliRunner().invoke(app, ["run", str(path), "-i", str(data), "-o",
                                              str(tmp_path / "out")])
            assert result.exit_code == 2, result.output
            assert "step summarize" in result.output and "field when" in result.output
        assert server.calls == []
    assert not (tmp_path / "out").exists()


def test_set_gives_a_step_its_condition_from_the_command_line(server: FakeOpenAIServer,
                                                               tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(spec(server.url, [generate(None)])))
    result = CliRunner().invoke(app, ["run", str(path), "-i", str(data), "-o",
                                      str(tmp_path / "out"),
                                      "--set", f"summarize.when={CONDITION}"])
    assert result.exit_code == 0, result.output
    assert len(server.calls) == 2  # only the two long English texts were summarized
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["steps"][0]["when"] == CONDITION


@pytest.mark.parametrize("text", [
    "__import__('os')", "text.__class__", "(lambda: 1)()", "[t for t in text]", "2 ** 64",
    "open('f')", "text.format(x)", "getattr(text, 'x')", "{'a': 1}", "x := 1", "f'{text}'",
    "len(text=1)"])
def test_unsafe_expressions_are_refused_when_parsed(text: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(text)


def test_expressions_read_fields_and_allowed_functions() -> None:
    record = {"text": "Hello World", "tags": ["a", "b"], "n": 4, "note": None}
    for text, value in [("len(text) == 11 and n % 2 == 0", True),
                        ("lower(text).startswith('hello')", True),
                        ("'b' in tags and tags[0] == 'a' and text[:5] == 'Hello'", True),
                        ("has('note') or not has('text')", False),
                        ("n * 2 if n > 3 else 0", 8), ("1 < n <= 3", False)]:
        assert Expression(text).evaluate(record) == value, text
    assert Expression("len(text) > n").names == ["n", "text"]
    with pytest.raises(RecordError, match="missing field 'lang'"):
        Expression("lang == 'en'").holds(record)
    with pytest.raises(RecordError, match="too large"):
        Expression("text * n").evaluate({"text": "ab", "n": 10**9})


HAZARDS = {  # each would hang or take gigabytes if it were built; all must be refused quickly
    "round(5, -100000000)": "digits is out of range",
    "'%2000000000d' % 1": "'%' formatting of strings",
    "str(['x'*99999]*99999)": "repeating 1 items 99999 times",
    "max([['x'*99999]*99999]*99999)": "repeating 1 items 99999 times",
    "[[0]*99999]*99999 == [[0]*99999]*99999": "repeating 1 items 99999 times",
    "len(['x'*50000]*50000)": "repeating 1 items 50000 times",
}
PROBE = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))
from synthaug.expressions import Expression
for text in json.loads(sys.argv[1]):
    try:
        print(json.dumps([text, "value", repr(Expression(text).evaluate({}))[:40]]), flush=True)
    except BaseException as exc:
        print(json.dumps([text, type(exc).__name__, str(exc)]), flush=True)
"""


def test_expressions_that_would_hang_or_exhaust_memory_are_refused_before_building() -> None:
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(HAZARDS))],
                          capture_output=True, text=True, timeout=60)
    found = {text: (kind, message) for text, kind, message
             in map(json.loads, done.stdout.splitlines())}
    for text, words in HAZARDS.items():
        assert found.get(text, ("hung or crashed", ""))[0] == "RecordError", (text, found)
        assert words in found[text][1], (text, found[text])


def test_large_results_are_refused_counting_nested_strings_and_lists() -> None:
    record = {"tags": ["x" * 60_000, "y" * 60_000], "t": "z" * 60_000}
    for text in ("str(tags)", "[t, t]", "tags + []"):
        with pytest.raises(RecordError, match=r"a value of more than 100000 .* is too large"):
            Expression(text).evaluate(record)
    assert Expression("len(str([t]))").evaluate(record) == 60_004
    assert Expression("[0] * 1000 == [0] * 1000").evaluate({}) is True


@pytest.mark.parametrize("depth", [60, 998])
def test_deeply_nested_expressions_are_refused_when_parsed(depth: int) -> None:
    with pytest.raises(ExpressionError, match="nested"):
        Expression("-" * depth + "1")
    assert Expression("-" * 20 + "1").evaluate({}) == 1


@pytest.mark.parametrize("error", [MemoryError, RecursionError, OverflowError])
def test_any_failure_while_evaluating_is_a_record_error(error: type[BaseException],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from synthaug import expressions

    def broken(value: Any) -> Any:
        raise error()

    monkeypatch.setitem(expressions.FUNCTIONS, "abs", broken)
    with pytest.raises(RecordError, match="cannot evaluate 'abs\\(n\\)'"):
        Expression("abs(n)").evaluate({"n": 1})


def test_round_and_modulo_still_work_within_limits() -> None:
    assert Expression("round(n, 2)").evaluate({"n": 2.567}) == 2.57
    assert Expression("round(n, -2)").evaluate({"n": 1234}) == 1200
    assert Expression("n % 3").evaluate({"n": 7}) == 1


def test_only_matching_records_need_the_steps_fields(server: FakeOpenAIServer,
                                                     tmp_path: Path) -> None:
    rows = [{"text": "hello", "k": 1}, {"k": 2}, {"k": 0}, {"text": 5, "k": 3}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    state = run(pipeline(server.url, generate("k > 0")), tmp_path / "out", data)
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert sorted(r["k"] for r in records) == [0, 1]  # {"k": 0} is skipped, not rejected
    assert [r["summary"] for r in records if r["k"] == 1] and len(server.calls) == 1
    rejects = {r["record"]["k"]: r for r in read_jsonl(tmp_path / "out" / "rejects.jsonl")}
    assert sorted(rejects) == [2, 3] and state.status == "partial"
    assert rejects[2]["field"] == "text" and "matches 'k > 0'" in rejects[2]["reason"]
    assert rejects[3]["field"] == "text" and "must be a string" in rejects[3]["reason"]


def test_a_condition_on_a_missing_field_does_not_need_the_steps_fields(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello", "k": 1}, {"k": 2},
                                               {"text": None, "k": 3}])
    state = run(pipeline(server.url, generate("has('text')")), tmp_path / "out", data)
    assert state.status == "complete"
    assert not (tmp_path / "out" / "rejects.jsonl").exists()
    records = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert sorted((r["k"], "summary" in r) for r in records) == [(1, True), (2, False),
                                                                 (3, False)]


def test_a_later_step_needing_a_field_only_a_conditional_step_adds_fails_when_loaded(
        server: FakeOpenAIServer) -> None:
    title = {"use": "text-generation", "name": "title",
             "with": {"template": "Title for: {summary}", "output_field": "title"}}
    chained = pipeline(server.url, generate("lang == 'en'"), title)
    with pytest.raises(ConfigError) as found:
        chained.check({"text", "lang"})
    assert found.value.step == "title" and found.value.field == "summary"
    assert "field 'summary' is provided only when \"lang == 'en'\" (step summarize)" \
        in found.value.message
    chained.check({"text", "lang", "summary"})  # the input provides it for every record
    pipeline(server.url, generate(None), title).check({"text", "lang"})
    with pytest.raises(ConfigError) as typo:  # a step's own fields are still checked
        pipeline(server.url, generate("lang == 'en'", **{"with": {
            "template": "{txet}", "output_field": "summary"}})).check({"text", "lang"})
    assert typo.value.field == "txet"
    assert server.calls == []
