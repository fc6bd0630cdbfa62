"""Tokens per step and model, money from a user price table, and --max-tokens / --max-cost
stopping a run cleanly (status budget_exhausted, exit 4) that a rerun resumes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from synthaug.cli import app
from synthaug.records import Record
from synthaug.steps.base import Rounds, RoundsOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Sampling, Uses
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl, write_jsonl

runner = CliRunner()


def two_model_recipe(tmp_path: Path, url: str, concurrency: int = 1) -> Path:
    """answer (role default, model m1) -> drop q containing '3' -> check (role judge, m2)."""
    path = tmp_path / "two.yaml"
    path.write_text(f"""
name: two-models
input: required
backends:
  default: {{use: openai, with: {{base_url: "{url}", model: m1, concurrency: {concurrency}}}}}
  judge: {{use: openai, with: {{base_url: "{url}", model: m2, concurrency: {concurrency}}}}}
steps:
  - {{use: text-generation, name: answer, with: {{template: "Answer: {{q}}"}}}}
  - {{use: keyword-filter, name: no-three, with: {{field: q, words: ["3"]}}}}
  - use: text-generation
    name: check
    with: {{template: "Check: {{generation}}", backend: judge, output_field: verdict}}
""", encoding="utf-8")
    return path


def questions(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"q": f"question {i}"} for i in range(count)])


def echo_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens the test server reports for one call it answered by echo:
    10 for the prompt, one a word of 'echo: ' + the last message."""
    return 10, len(("echo: " + body["messages"][-1]["content"]).split())


def expected(calls: list[dict[str, Any]], prefix: str) -> tuple[int, int, int]:
    """(calls, prompt tokens, completion tokens) of the server calls whose prompt starts
    with `prefix`."""
    mine = [echo_tokens(c) for c in calls if c["messages"][-1]["content"].startswith(prefix)]
    return len(mine), sum(p for p, _ in mine), sum(c for _, c in mine)


def usage_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())["usage"]
    return data


def test_tokens_are_summed_per_step_and_model(server: FakeOpenAIServer, tmp_path: Path) -> None:
    recipe, data = two_model_recipe(tmp_path, server.url), questions(tmp_path, 5)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(recipe), "-i", str(data), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    usage = usage_of(out)
    calls, prompt, completion = expected(server.calls, "Answer:")
    assert calls == 5
    answer = usage["steps"]["answer"]["m1"]
    assert (answer["calls"], answer["prompt_tokens"], answer["completion_tokens"]) == (
        calls, prompt, completion)
    calls2, prompt2, completion2 = expected(server.calls, "Check:")
    assert calls2 == 4  # question 3 was dropped before the check
    check = usage["steps"]["check"]["m2"]
    assert (check["calls"], check["prompt_tokens"], check["completion_tokens"]) == (
        calls2, prompt2, completion2)
    assert set(usage["steps"]) == {"answer", "check"}  # the filter calls no model
    assert usage["models"]["m1"]["prompt_tokens"] == prompt
    assert usage["tokens"] == prompt + completion + prompt2 + completion2
    assert f"tokens: {usage['tokens']} " in result.output
    assert usage["cost"] is None and usage["cost_unknown"] == ["m1", "m2"]
    assert "cost: unknown: no price for m1, m2" in result.output


def test_reasoning_tokens_are_shown_apart(server: FakeOpenAIServer, tmp_path: Path) -> None:
    from synthaug.testing import Reply

    data = questions(tmp_path, 2)
    server.enqueue(Reply(text="four words of answer", reasoning_tokens=7),
                   Reply(text="two words", reasoning_tokens=3))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "text-generation", "-i", str(data), "-o", str(out),
                                 "-q", "--base-url", server.url, "--model", "m1", "--set",
                                 "generate.template={q}", "--concurrency", "1"])
    assert result.exit_code == 0, result.output
    m1 = usage_of(out)["models"]["m1"]
    assert m1["reasoning_tokens"] == 10
    assert m1["completion_tokens"] == 4 + 7 + 2 + 3  # reasoning is part of the completion
    assert "of which reasoning 10" in result.output


def test_cost_comes_from_the_price_table_only(server: FakeOpenAIServer, tmp_path: Path) -> None:
    recipe, data = two_model_recipe(tmp_path, server.url), questions(tmp_path, 4)
    prices = tmp_path / "prices.yaml"
    prices.write_text("m1: {input: 2.0, output: 10.0}\nm2: {input: 1, output: 3}\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(recipe), "-i", str(data), "-o", str(out), "-q",
                                 "--prices", str(prices)])
    assert result.exit_code == 0, result.output
    usage = usage_of(out)
    _, p1, c1 = expected(server.calls, "Answer:")
    _, p2, c2 = expected(server.calls, "Check:")
    cost1, cost2 = (p1 * 2.0 + c1 * 10.0) / 1e6, (p2 * 1 + c2 * 3) / 1e6
    assert math.isclose(usage["models"]["m1"]["cost"], cost1)
    assert math.isclose(usage["models"]["m2"]["cost"], cost2)
    assert math.isclose(usage["cost"], cost1 + cost2) and usage["cost_unknown"] == []
    assert f"cost: {cost1 + cost2:.6g}" in result.output

    # a model missing from the table: its cost is unknown, and so is the total (never 0)
    prices.write_text("m1: {input: 2.0, output: 10.0}\n")
    out = tmp_path / "out2"  # a fresh cache: the calls are paid again
    again = runner.invoke(app, ["run", str(recipe), "-i", str(data), "-o", str(out), "-q",
                                "--prices", str(prices)])
    assert again.exit_code == 0, again.output
    usage = usage_of(out)
    assert usage["models"]["m2"]["cost"] is None and usage["cost"] is None
    assert usage["cost_unknown"] == ["m2"]
    assert "no price for m2" in again.output


def test_cache_hits_are_free_and_counted_apart(server: FakeOpenAIServer,
                                               tmp_path: Path) -> None:
    recipe, data = two_model_recipe(tmp_path, server.url), questions(tmp_path, 3)
    prices = tmp_path / "prices.yaml"
    prices.write_text("m1: {input: 1, output: 1}\nm2: {input: 1, output: 1}\n")
    out = tmp_path / "out"
    args = ["run", str(recipe), "-i", str(data), "-o", str(out), "-q", "--prices", str(prices)]
    assert runner.invoke(app, args).exit_code == 0
    first = usage_of(out)
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    usage = usage_of(out)
    answer = usage["steps"]["answer"]["m1"]
    assert answer["calls"] == 0 and answer["prompt_tokens"] == 0 and answer["cache_hits"] == 3
    assert answer["cached_prompt_tokens"] == first["steps"]["answer"]["m1"]["prompt_tokens"]
    assert usage["tokens"] == 0 and usage["cost"] == 0.0


def test_a_token_budget_stops_the_run_and_a_larger_one_resumes(server: FakeOpenAIServer,
                                                               tmp_path: Path) -> None:
    recipe, data = two_model_recipe(tmp_path, server.url), questions(tmp_path, 6)
    out = tmp_path / "out"
    args = ["run", str(recipe), "-i", str(data), "-o", str(out), "-q"]
    stopped = runner.invoke(app, [*args, "--max-tokens", "60"])
    assert stopped.exit_code == 4, stopped.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "budget_exhausted"
    budget = manifest["usage"]["budget"]
    assert budget["exhausted"] and budget["refused_calls"] > 0
    spent = manifest["usage"]["tokens"]
    last_call = max(sum(echo_tokens(c)) for c in server.calls)
    # two roles, one call each at a time: when a call reaches the budget, at most one other
    # call is in flight; nothing starts after
    assert 60 <= spent < 60 + 2 * last_call
    assert spent == sum(sum(echo_tokens(c)) for c in server.calls)
    written = read_jsonl(out / "records.jsonl")
    assert 0 < len(written) < 5
    assert read_jsonl(out / "failures.jsonl") == []  # left undone is not a failure
    assert "budget spent" in stopped.output

    paid = len(server.calls)
    same = runner.invoke(app, [*args, "--max-tokens", "60"])  # earlier spending counts
    assert same.exit_code == 4 and len(server.calls) == paid

    resumed = runner.invoke(app, [*args, "--max-tokens", "10000"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert len(read_jsonl(out / "records.jsonl")) == 5
    bodies = [json.dumps(c["messages"], sort_keys=True) for c in server.calls]
    assert len(bodies) == len(set(bodies)) == 6 + 5  # no call paid twice
    usage = usage_of(out)
    assert usage["all_runs"]["tokens"] == sum(sum(echo_tokens(c)) for c in server.calls)


def test_calls_in_flight_finish_and_bound_the_overshoot(tmp_path: Path) -> None:
    data = questions(tmp_path, 12)
    out = tmp_path / "out"
    with FakeOpenAIServer(delay=0.2) as server:
        result = runner.invoke(app, [
            "run", "text-generation", "-i", str(data), "-o", str(out), "-q", "--base-url",
            server.url, "--concurrency", "3", "--set", "generate.template=Answer: {q}",
            "--max-tokens", "20"])
        assert result.exit_code == 4, result.output
        assert server.max_in_flight >= 2
        made = len(server.calls)
    # one call (14 tokens) is not enough, the second reaches the budget; at most
    # `concurrency - 1` more were in flight when it was reached, and they all finished
    assert 2 <= made <= 2 + 2
    assert usage_of(out)["tokens"] == sum(sum(echo_tokens(c)) for c in server.calls)
    assert len(read_jsonl(out / "records.jsonl")) == made  # every answer paid is written


def test_max_cost_needs_a_price_for_every_model(server: FakeOpenAIServer,
                                                tmp_path: Path) -> None:
    recipe, data = two_model_recipe(tmp_path, server.url), questions(tmp_path, 2)
    out = tmp_path / "out"
    args = ["run", str(recipe), "-i", str(data), "-o", str(out), "-q", "--max-cost", "1"]
    bare = runner.invoke(app, args)
    assert bare.exit_code == 2 and "--prices" in bare.output
    prices = tmp_path / "prices.yaml"
    prices.write_text("m1: {input: 1, output: 1}\n")
    partial = runner.invoke(app, [*args, "--prices", str(prices)])
    assert partial.exit_code == 2 and "field m2" in partial.output
    assert server.calls == [] and not (out / "records.jsonl").exists()


def test_a_cost_budget_stops_the_run(server: FakeOpenAIServer, tmp_path: Path) -> None:
    recipe, data = two_model_recipe(tmp_path, server.url), questions(tmp_path, 6)
    prices = tmp_path / "prices.yaml"
    prices.write_text("m1: {input: 1000, output: 1000}\nm2: {input: 1000, output: 1000}\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(recipe), "-i", str(data), "-o", str(out), "-q",
                                 "--prices", str(prices), "--max-cost", "0.05"])
    assert result.exit_code == 4, result.output
    usage = usage_of(out)
    assert usage["cost"] >= 0.05 and usage["budget"]["exhausted"].startswith("cost budget")
    # a call costs 0.014 or 0.015: the fourth reaches 0.05; one more may have been in flight
    # (two roles, one call each at a time); no call starts after
    assert 4 <= len(server.calls) <= 5


def test_a_bad_price_table_names_file_and_field(server: FakeOpenAIServer,
                                                tmp_path: Path) -> None:
    data = questions(tmp_path, 1)
    prices = tmp_path / "prices.yaml"
    base = ["run", "text-generation", "-i", str(data), "-o", str(tmp_path / "o"), "-q",
            "--base-url", server.url, "--prices", str(prices)]
    for text, field in [("m1: {input: 1, outptu: 2}\n", "m1.outptu"),
                        ("m1: {input: -1, output: 2}\n", "m1.input"),
                        ("m1: {input: 1}\n", "m1.output"),
                        ("m1: cheap\n", "m1")]:
        prices.write_text(text)
        result = runner.invoke(app, base)
        assert result.exit_code == 2, (text, result.output)
        assert f"field {field}" in result.output and str(prices) in result.output
    prices.write_text("- m1\n")
    listed = runner.invoke(app, base)
    assert listed.exit_code == 2 and "maps model names" in listed.output
    assert server.calls == []


def test_a_cost_budget_stops_when_an_unpriced_model_answers() -> None:
    from synthaug.backends.base import Completion
    from synthaug.budget import Budget, BudgetExhausted, Charge, Meter, Price, PriceTable

    table = PriceTable({"m1": Price(input=1, output=1)})
    meter = Meter(Budget(prices=table, max_cost=1.0))
    charge = Charge(meter, "step")
    charge.paid("m1", [Completion("x", prompt_tokens=10, completion_tokens=5)])
    charge.admit()  # 15 tokens at 1 a million: far below the budget
    charge.paid("m2", [Completion("y", prompt_tokens=10, completion_tokens=5)])
    with pytest.raises(BudgetExhausted, match="no price for m2"):
        charge.admit()
    assert meter.refused == 1 and meter.exhausted


# -- review fixes: partial replies kept, servers without usage, rounds stop ------------------
def test_valid_replies_before_a_budget_refusal_are_cached(server: FakeOpenAIServer,
                                                          tmp_path: Path) -> None:
    """n=3: attempt 0 gets 2 valid + 1 invalid reply, attempt 1 is refused by the budget; the
    2 valid replies are cached under sample keys 0 and 1, so a rerun pays only for sample 2."""
    import asyncio

    from synthaug.backends.base import Request
    from synthaug.backends.cache import ResponseCache, cache_key
    from synthaug.backends.client import LLMClient
    from synthaug.backends.openai import OpenAIBackend, OpenAIOptions
    from synthaug.budget import Budget, BudgetExhausted, Meter, charging

    def no_third(text: str) -> None:
        if text.endswith("[2]"):
            raise ValueError("the third sample is rejected")

    request = Request(messages=({"role": "user", "content": "hi"},), n=3, seed=1)

    async def ask(max_tokens: int | None) -> list[Any]:
        backend = OpenAIBackend(OpenAIOptions(base_url=server.url, model="m1"))
        client = LLMClient(backend, ResponseCache(tmp_path / "c.sqlite"), backoff_base=0.0)
        try:
            context = charging(Meter(Budget(max_tokens=max_tokens)), "s")
            return await asyncio.create_task(client.complete(request, no_third),
                                             context=context)
        finally:
            await client.close()

    with pytest.raises(BudgetExhausted):
        asyncio.run(ask(max_tokens=1))
    assert [c["n"] for c in server.calls] == [3]  # the retry was refused
    cache = ResponseCache(tmp_path / "c.sqlite")
    identity = OpenAIBackend(OpenAIOptions(base_url=server.url, model="m1")).identity()
    kept = [cache.get(cache_key(identity, request, i)) for i in range(3)]
    assert [c.text if c else None for c in kept] == ["echo: hi [0]", "echo: hi [1]", None]
    cache.close()

    answers = asyncio.run(ask(max_tokens=None))  # the rerun pays only for the missing sample
    assert [c.get("n", 1) for c in server.calls] == [3, 1]
    assert [a.text for a in answers] == ["echo: hi [0]", "echo: hi [1]", "echo: hi"]


def test_a_server_without_usage_makes_cost_unknown_and_stops_a_budget(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    """No `usage` in a reply: tokens are not known (never 0 cost); a run under --max-tokens
    or --max-cost stops rather than spend blind."""
    from synthaug.testing import Reply

    data = questions(tmp_path, 4)
    prices = tmp_path / "prices.yaml"
    prices.write_text("m1: {input: 1, output: 1}\n")
    base = ["run", "text-generation", "-i", str(data), "-q", "--base-url", server.url,
            "--model", "m1", "--set", "generate.template={q}", "--concurrency", "1",
            "--prices", str(prices)]
    server.responder = lambda body: Reply(text="no usage here", usage=False)
    free = runner.invoke(app, [*base, "-o", str(tmp_path / "free")])
    assert free.exit_code == 0, free.output
    usage = usage_of(tmp_path / "free")
    assert usage["steps"]["generate"]["m1"]["unmetered_calls"] == 4
    assert usage["cost"] is None and usage["models"]["m1"]["cost"] is None
    assert usage["usage_unknown"] == ["m1"]
    assert "m1 answered without reporting token usage" in free.output

    for flag, value in [("--max-tokens", "100000"), ("--max-cost", "1000")]:
        paid = len(server.calls)
        out = tmp_path / flag.strip("-")
        stopped = runner.invoke(app, [*base, "-o", str(out), flag, value])
        assert stopped.exit_code == 4, stopped.output
        assert len(server.calls) == paid + 1  # the first call shows it; no other starts
        assert "without reporting token usage" in usage_of(out)["budget"]["exhausted"]


class AskEach(Rounds[RoundsOptions]):
    """A rounds step that asks about every record each round, leaving refused ones undone."""

    Options: ClassVar[type[StepOptions]] = RoundsOptions

    def uses(self) -> list[Uses]:
        return [Uses("default", "answers")]

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        self.pool = pool

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        made = []
        for record in self.pool:
            ask = ctx.generate(f"{record['q']} r{index}", Sampling(), seed=ctx.seed_for(record))
            reply = await ctx.attempt(ask, record)
            if reply is not None:
                made.append(ctx.derive([record], {"a": reply.text, "round": index}, index,
                                       reply))
        return made, False


def test_rounds_stop_and_skip_the_hook_once_the_budget_is_spent(server: FakeOpenAIServer,
                                                                tmp_path: Path) -> None:
    """A budget spent in round 0: the between-rounds command does not run on the partial
    round, no later round starts; a rerun with a larger budget finishes every round."""
    from synthaug.budget import Budget
    from synthaug.pipeline import BackendSpec, Pipeline
    from tests.conftest import run

    marker = tmp_path / "hook.txt"
    pipeline = Pipeline.from_steps(
        AskEach(rounds=2, between_rounds=f"echo $SYNTHAUG_ROUND >> {marker}"),
        backends={"default": BackendSpec(use="openai", **{"with": {
            "base_url": server.url, "model": "m1", "concurrency": 1}})})
    data, out = questions(tmp_path, 3), tmp_path / "out"
    state = run(pipeline, out, data, budget=Budget(max_tokens=20))  # a call costs 14
    assert state.status == "budget_exhausted"
    assert len(server.calls) == 2  # the third call of round 0 was refused
    assert not marker.exists()  # no training on a partial round
    rounds = json.loads((out / "manifest.json").read_text())["steps"]["0-askeach"]["rounds"]
    assert [(r["round"], r.get("stopped")) for r in rounds] == [(0, "budget spent")]

    state = run(pipeline, out, data, budget=Budget(max_tokens=10000))
    assert state.status == "complete"
    assert marker.read_text().split() == ["0", "1"]
    assert len(server.calls) == 2 + 1 + 3  # round 0's first two answers came from the cache
    written = read_jsonl(out / "records.jsonl")
    assert sorted(r["a"] for r in written) == sorted(
        f"echo: question {i} r{k}" for i in range(3) for k in range(2))
