"""`synthaug preview`: a trace of a few records through every step (prompts, replies, drops
with reasons), nothing written but the cache, and an estimate of the full run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from synthaug.cli import app
from synthaug.testing import FakeOpenAIServer
from tests.conftest import write_jsonl
from tests.test_budget import echo_tokens, questions, two_model_recipe

runner = CliRunner()


def test_preview_traces_steps_and_writes_only_the_cache(server: FakeOpenAIServer,
                                                        tmp_path: Path) -> None:
    recipe, data = two_model_recipe(tmp_path, server.url), questions(tmp_path, 10)
    out = tmp_path / "out"
    shown = runner.invoke(app, ["preview", str(recipe), "-i", str(data), "-o", str(out),
                                "--n", "4"])
    assert shown.exit_code == 0, shown.output
    assert [p.name for p in out.iterdir()] == ["cache.sqlite"]  # no records, no manifest
    text = shown.output
    # each step's records with the prompt and the reply behind them
    assert "== step 1 answer: 4 in, 4 out" in text
    assert "user: Answer: question 2" in text and "reply: echo: Answer: question 2" in text
    assert "user: Check: echo: Answer: question 1" in text
    assert '-> {"q": "question 1", "generation": "echo: Answer: question 1", "verdict": ' \
        '"echo: Check: echo: Answer: question 1"}' in text
    # what the filter drops, and why
    assert "== step 2 no-three: 4 in, 3 out, 1 dropped" in text
    assert "dropped: contains '3'" in text and '"q": "question 3"' in text
    assert len(server.calls) == 4 + 3

    # the full run replays the previewed calls from the cache: none is made twice
    full = runner.invoke(app, ["run", str(recipe), "-i", str(data), "-o", str(out), "-q"])
    assert full.exit_code == 0, full.output
    bodies = [json.dumps(c["messages"], sort_keys=True) for c in server.calls]
    assert len(bodies) == len(set(bodies)) == 10 + 9
    usage = json.loads((out / "manifest.json").read_text())["usage"]
    assert usage["steps"]["answer"]["m1"]["cache_hits"] == 4
    assert usage["steps"]["answer"]["m1"]["calls"] == 6


def test_preview_estimates_calls_tokens_and_cost(server: FakeOpenAIServer,
                                                 tmp_path: Path) -> None:
    data = questions(tmp_path, 20)
    prices = tmp_path / "prices.yaml"
    prices.write_text("m1: {input: 1, output: 2}\n")
    args = ["preview", "text-generation", "-i", str(data), "-o", str(tmp_path / "out"),
            "--base-url", server.url, "--model", "m1", "--set",
            "generate.template=Answer: {q}", "--n", "2"]
    shown = runner.invoke(app, [*args, "--prices", str(prices)])
    assert shown.exit_code == 0, shown.output
    prompt = sum(echo_tokens(c)[0] for c in server.calls)
    completion = sum(echo_tokens(c)[1] for c in server.calls)
    assert "preview: 2 input records, 2 calls (2 paid, 0 from the cache)" in shown.output
    assert "x 20 input records" in shown.output
    assert f"~20 calls, ~{(prompt + completion) * 10} tokens" in shown.output
    assert f"~{(prompt * 1 + completion * 2) * 10 / 1e6:.6g} cost" in shown.output

    # previewed again: the calls come from the cache (free) and still feed the estimate;
    # the full run's --limit caps the count; no price table: the cost is unknown
    again = runner.invoke(app, [*args, "--limit", "8"])
    assert again.exit_code == 0, again.output
    assert len(server.calls) == 2
    assert "2 calls (0 paid, 2 from the cache)" in again.output
    assert "x 8 input records" in again.output
    assert f"~8 calls, ~{(prompt + completion) * 4} tokens" in again.output
    assert "cost unknown (no --prices)" in again.output
    assert "(from the cache, free)" in again.output


def test_preview_uses_the_given_cache_and_says_when_the_count_is_unknown(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    recipe = tmp_path / "gen.yaml"
    recipe.write_text(f"""
name: other-cache
input: required
backends:
  default: {{use: openai, with: {{base_url: "{server.url}", model: m1}}}}
steps:
  - {{use: text-generation, name: answer, with: {{template: "Answer: {{q}}"}}}}
""")
    data = write_jsonl(tmp_path / "in.jsonl", [{"q": "a"}, {"q": "b"}])
    cache = tmp_path / "elsewhere" / "c.sqlite"
    out = tmp_path / "out"
    shown = runner.invoke(app, ["preview", str(recipe), "-i", str(data), "-o", str(out),
                                "--cache", str(cache), "--n", "1"])
    assert shown.exit_code == 0, shown.output
    assert cache.exists() and not out.exists()
    assert f"are in {cache}" in " ".join(shown.output.split())
    none = runner.invoke(app, ["preview", "amps-procedural", "-o", str(out), "--cache",
                               str(cache), "--set", "problems.count=2"])
    assert none.exit_code == 0, none.output
    assert "no estimate: the recipe reads no input" in none.output
    assert "== step 1 problems: 0 in, 2 out" in none.output


def test_preview_refuses_bad_options_before_any_call(server: FakeOpenAIServer,
                                                     tmp_path: Path) -> None:
    data = questions(tmp_path, 2)
    prices = tmp_path / "prices.yaml"
    prices.write_text("m1: {input: 1, outptu: 2}\n")
    bad = runner.invoke(app, ["preview", "text-generation", "-i", str(data), "--base-url",
                              server.url, "--prices", str(prices), "-o", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "field m1.outptu" in bad.output
    typo = runner.invoke(app, ["preview", "text-generation", "-i", str(data), "--base-url",
                               server.url, "--set", "generate.tempreture=1"])
    assert typo.exit_code == 2 and "tempreture" in typo.output
    assert server.calls == [] and not (tmp_path / "o").exists()
