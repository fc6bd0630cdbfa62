"""The command line: run, recipes, backends, steps, inspect, exports and error exits."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from synthaug.cli import app
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl, write_jsonl

runner = CliRunner()


def test_run_against_a_base_url_then_inspect(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"q": f"question {i}"} for i in range(6)])
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "run", "text-generation", "-i", str(data), "-o", str(out), "--base-url", server.url,
        "--model", "m1", "--concurrency", "3", "--set", "generate.template=Answer: {q}",
        "--limit", "5", "--format", "parquet", "--format", "hf"])
    assert result.exit_code == 0, result.output
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == 5 and records[0]["_meta"]["model"] == "m1"
    assert {c["messages"][0]["content"] for c in server.calls} == {
        f"Answer: question {i}" for i in range(5)}
    import datasets
    import pyarrow.parquet as pq

    assert pq.read_table(out / "records.parquet").num_rows == 5
    hf = datasets.load_from_disk(str(out / "hf"))
    assert len(hf) == 5 and set(hf.column_names) >= {"q", "generation", "_meta"}
    shown = runner.invoke(app, ["inspect", str(out), "--n", "1"])
    assert shown.exit_code == 0 and "text-generation" in shown.output and "in" in shown.output


def test_recipes_are_listed_with_citations_and_filters() -> None:
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0
    assert "self-instruct" in result.output and "Wang et al., 2023" in result.output
    assert "text-generation" in result.output
    tuned = runner.invoke(app, ["recipes", "--stage", "instruction-tuning"])
    assert "self-instruct" in tuned.output
    none = runner.invoke(app, ["recipes", "--stage", "preference"])
    assert "self-instruct" not in none.output


def test_backends_and_steps_are_listed() -> None:
    backends = runner.invoke(app, ["backends"])
    assert "llamacpp" in backends.output and "openai" in backends.output
    steps = runner.invoke(app, ["steps"])
    assert "self-instruct-instructions" in steps.output and "text-generation" in steps.output


def test_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "x"}])
    bad = runner.invoke(app, ["run", "text-generation", "-i", str(data), "-o",
                              str(tmp_path / "o"), "--set", "generate.tempreture=1"])
    assert bad.exit_code == 2 and "tempreture" in bad.output
    missing = runner.invoke(app, ["run", "no-such-recipe"])
    assert missing.exit_code == 2 and "unknown recipe" in missing.output
    no_input = runner.invoke(app, ["run", "text-generation", "-o", str(tmp_path / "o2")])
    assert no_input.exit_code == 2 and "--input" in no_input.output


def test_a_changed_config_does_not_mix_into_old_output(server: FakeOpenAIServer,
                                                       tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "x"}])
    args = ["run", "text-generation", "-i", str(data), "-o", str(tmp_path / "o"),
            "--base-url", server.url]
    assert runner.invoke(app, args).exit_code == 0
    changed = runner.invoke(app, [*args, "--seed", "7"])
    assert changed.exit_code == 2, changed.output
    assert "different run: seed 0 -> 7" in changed.output and "--overwrite" in changed.output
    assert runner.invoke(app, [*args, "--seed", "7", "--overwrite"]).exit_code == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 7


def test_cli_docs_are_generated_from_the_code(tmp_path: Path) -> None:
    import shutil
    import subprocess

    typer_bin = shutil.which("typer") or str(Path(__file__).parents[1] / ".venv/bin/typer")
    target = tmp_path / "cli.md"
    subprocess.run([typer_bin, "synthaug.cli", "utils", "docs", "--name", "synthaug",
                    "--output", str(target)], check=True, capture_output=True)
    committed = Path(__file__).parents[1] / "docs" / "cli.md"
    assert target.read_text() == committed.read_text(), "run `make docs`"


def test_backend_options_from_the_command_line(server: FakeOpenAIServer, tmp_path: Path) -> None:
    chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
              "<|im_end|>\n{% endfor %}")
    result = runner.invoke(app, [
        "run", "magpie", "-o", str(tmp_path / "o"), "--base-url", server.url,
        "--backend-option", f"chat_template={chatml}", "--backend-option",
        "requests_per_minute=6000", "--set", "magpie.count=2"])
    assert result.exit_code == 0, result.output
    assert [c["prompt"] for c in server.calls if "prompt" in c] == ["<|im_start|>user\n"] * 2
    bad = runner.invoke(app, ["run", "magpie", "-o", str(tmp_path / "b"), "--base-url",
                              server.url, "--backend-option", "chat_tmplate=x"])
    assert bad.exit_code == 2 and "chat_tmplate" in bad.output
