"""Bad input and bad recipes: clear errors naming file, line, step and field; nothing lost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from synthaug.errors import ConfigError
from synthaug.pipeline import Pipeline, load_recipe
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl, run, text_generation, write_jsonl


def test_malformed_lines_go_to_rejects_and_the_rest_is_processed(
        server: FakeOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(b'{"instruction": "one"}\n'
                     b'{"instruction": "two"\n'
                     b'{"instruction": "three \xff\xfe"}\n'
                     b'[1, 2]\n'
                     b'{"other": "no instruction here"}\n'
                     b'{"instruction": "six"}\n')
    with caplog.at_level(logging.WARNING):
        state = run(text_generation(server.url), tmp_path / "out", data)
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert sorted(r["instruction"] for r in out) == ["one", "six"]
    assert [(r["line"], r["field"]) for r in rejects] == [
        (2, None), (3, None), (4, None), (5, "instruction")]
    assert all(r["file"] == str(data) for r in rejects)
    assert "malformed JSON" in rejects[0]["reason"] and rejects[0]["raw"].startswith('{"instr')
    assert "invalid UTF-8" in rejects[1]["reason"]
    assert f"{data}:2" in caplog.text and f"{data}:5 field 'instruction'" in caplog.text
    assert state.side["rejects"] == 4


def test_a_field_no_record_has_fails_before_any_call(server: FakeOpenAIServer,
                                                     tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"question": "q"}])
    with pytest.raises(ConfigError) as info:
        run(text_generation(server.url, template="Q: {question} {context}"), tmp_path / "o", data)
    assert info.value.step == "generate" and info.value.field == "context"
    assert "text-generation.yaml" in str(info.value.file)
    assert server.calls == []


def test_record_text_is_inserted_literally(server: FakeOpenAIServer, tmp_path: Path) -> None:
    nasty = ["{{ config }}", "{% for x in range(3) %}x{% endfor %}", "{instruction}",
             "${HOME} %(x)s {0}"]
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": s} for s in nasty])
    run(text_generation(server.url, template="Do this: {instruction} {{literal}}"),
        tmp_path / "out", data)
    sent = sorted(c["messages"][-1]["content"] for c in server.calls)
    assert sent == sorted(f"Do this: {s} {{literal}}" for s in nasty)
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert sorted(r["instruction"] for r in out) == sorted(nasty)


def _recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(("body", "step", "field", "words"), [
    ("name: x\nsteps:\n  - use: text-generation\n    name: gen\n    with: {temprature: 0.1}\n",
     "gen", "temprature", "unknown option"),
    ("name: x\nsteps:\n  - use: no-such-step\n", "0-no-such-step", "use", "unknown step"),
    ("name: x\nsteps:\n  - use: text-generation\n    with: {sampling: {max_tokens: lots}}\n",
     "0-text-generation", "sampling.max_tokens", "integer"),
    ("name: x\nsteps:\n  - use: text-generation\n    with: {max_tokens: 5}\n",
     "0-text-generation", "max_tokens", "sampling options go under 'sampling:'"),
    ("name: x\nstepz: []\n", None, "stepz", "unknown option"),
])
def test_recipe_errors_name_file_step_and_field(tmp_path: Path, body: str, step: str | None,
                                                field: str, words: str) -> None:
    path = _recipe(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        Pipeline.from_recipe(load_recipe(path), str(path))
    assert (info.value.file, info.value.step, info.value.field) == (str(path), step, field)
    assert words in str(info.value)


def test_unknown_backend_option_and_role_fail_up_front(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "name: x\nbackends:\n  default: {use: openai, with: {bse_url: u}}\n"
                   "steps:\n  - use: text-generation\n    with: {backend: judge}\n")
    pipeline = Pipeline.from_recipe(load_recipe(path), str(path))
    with pytest.raises(ConfigError, match="unknown backend role 'judge'"):
        pipeline.check(None)
    pipeline.steps[0][1].options.backend = "default"  # type: ignore[attr-defined]
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "x"}])
    with pytest.raises(ConfigError) as info:
        run(pipeline, tmp_path / "o", data)
    assert info.value.field == "bse_url" and info.value.step == "backend default"


def test_io_helpers_raise_config_errors_not_python_ones(tmp_path: Path) -> None:
    from synthaug.io import data_file, export, load_jsonl

    with pytest.raises(ConfigError, match=r"no file 'nope\.jsonl'"):
        data_file("nope.jsonl")
    records = write_jsonl(tmp_path / "records.jsonl", [{"a": 1}])
    with pytest.raises(ConfigError, match="unknown output format 'xml'") as info:
        export(records, "xml")
    assert info.value.field == "format"
    with pytest.raises(ConfigError, match="file not found"):
        load_jsonl(tmp_path / "none.jsonl")
