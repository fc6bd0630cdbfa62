"""The model service of the step context, the same from every step family (in-process fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from synthaug.backends.base import Request
from synthaug.errors import ConfigError, RetryableError
from synthaug.pipeline import Pipeline
from synthaug.records import Record, content
from synthaug.steps.base import Each, Generator, Map, Rounds, RoundsOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.generate.dialogue import SelfChat
from synthaug.steps.generate.lists import ExpandList
from synthaug.steps.generate.magpie import Magpie
from synthaug.steps.generate.sampling import FewShot
from synthaug.steps.generate.self_instruct import SelfInstructClassify
from synthaug.steps.generate.text import TextGeneration
from synthaug.steps.llm import Sampling, Uses
from synthaug.testing.fake import Script, text_of
from tests.conftest import read_jsonl, run, write_jsonl

GREEDY = Sampling(temperature=0.0, max_tokens=8)


def pipeline(*steps: Any, script: Script, seed: int = 0, **roles: Script) -> Pipeline:
    backends = {"default": script.spec(), **{r: s.spec() for r, s in roles.items()}}
    return Pipeline.from_steps(*steps, backends=backends, seed=seed)


class AskMap(Map[StepOptions]):
    """A Map cannot await; it only shows the family takes ctx (RNG) like the others."""

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        yield {**content(record), "pick": ctx.rng(record, "pick").randint(0, 10**9)}


class AskEach(Each[Any]):
    def uses(self) -> list[Uses]:
        return [Uses("default")]

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        reply = await ctx.generate(str(record["q"]), GREEDY, seed=ctx.seed_for(record))
        return [ctx.derive([record], {"a": reply.text}, 0, reply)]


class AskGenerator(Generator[StepOptions]):
    def uses(self) -> list[Uses]:
        return [Uses("default")]

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        for i in range(2):
            reply = await ctx.attempt(ctx.generate(f"g{i}", GREEDY, seed=ctx.seed_for(None, i)),
                                      {"slot": i})
            if reply is not None:
                yield ctx.derive([], {"a": reply.text}, i, reply)


class AskRounds(Rounds[RoundsOptions]):
    Options: ClassVar[type[StepOptions]] = RoundsOptions

    def uses(self) -> list[Uses]:
        return [Uses("default")]

    async def start(self, pool: list[Record], ctx: StepContext) -> None:
        self.pool = pool

    async def round(self, index: int, ctx: StepContext) -> tuple[list[Record], bool]:
        first = await ctx.generate(f"r{index}", GREEDY, seed=ctx.seed_for(None, index))
        second = await ctx.generate(f"s{index}", GREEDY, seed=ctx.seed_for(None, index, 2))
        return [ctx.derive([], {"a": first.text, "b": second.text}, index, first, second)], False


@pytest.mark.parametrize("step", [AskEach(), AskGenerator(), AskRounds(rounds=2)])
def test_every_family_gets_replies_with_provenance(step: Any, tmp_path: Path) -> None:
    script = Script(lambda r: "reply to " + text_of(r))
    data = write_jsonl(tmp_path / "in.jsonl", [{"q": "x"}, {"q": "y"}])
    run(pipeline(step, script=script), tmp_path / "out", data)
    out = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert len(out) == 2 and script.requests
    sent = {(text_of(r), r.seed) for r in script.requests}
    for record in out:
        meta = record["_meta"]
        assert meta["backend"] == "fake" and meta["model"] == "default"
        assert len(meta["prompt_sha"]) == 16 and meta["recipe"] == "pipeline"
        assert any(seed == meta["seed"] for _, seed in sent)
    if isinstance(step, AskRounds):  # two calls made each record: both are listed
        assert [len(r["_meta"]["calls"]) for r in out] == [2, 2]


def test_a_role_the_recipe_lacks_fails_before_any_call(tmp_path: Path) -> None:
    script = Script()
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "x"}])
    step = TextGeneration(backend="judge")
    with pytest.raises(ConfigError) as info:
        run(pipeline(step, script=script), tmp_path / "out", data)
    assert "judge" in str(info.value) and info.value.field == "backend"
    assert script.requests == []


def test_an_undeclared_role_cannot_be_called(tmp_path: Path) -> None:
    class Sneaky(AskEach):
        async def process(self, record: Record, ctx: StepContext) -> list[Record]:
            await ctx.generate("x", GREEDY, seed=1, role="other")
            return []

    script = Script()
    data = write_jsonl(tmp_path / "in.jsonl", [{"q": "x"}])
    with pytest.raises(ConfigError, match="did not declare"):
        run(pipeline(Sneaky(), script=script, other=Script()), tmp_path / "out", data)


def test_a_missing_capability_fails_before_any_call(tmp_path: Path) -> None:
    script = Script()  # the fake backend knows no chat template unless told
    with pytest.raises(ConfigError) as info:
        run(pipeline(Magpie(count=2), script=script), tmp_path / "out")
    assert "chat_template" in str(info.value) and script.requests == []


def test_seed_changes_every_random_choice_and_a_rerun_repeats_it(tmp_path: Path) -> None:
    rows = [{"topic": f"t{i}"} for i in range(6)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"q": f"example {i}"} for i in range(20)])

    def picks(seed: int, out: str) -> list[Any]:
        steps = [FewShot(pool=str(pool), k=2, format="{q}"), AskMap(),
                 ExpandList(template="{topic}", pick=1)]
        script = Script(lambda r: "1. a\n2. b\n3. c\n4. d\n5. e")
        run(pipeline(*steps, script=script, seed=seed), tmp_path / out, data)
        records = read_jsonl(tmp_path / out / "records.jsonl")
        return sorted((r["topic"], r["examples_ids"], r["pick"], r["item"]) for r in records)

    first, again, other = picks(0, "a"), picks(0, "b"), picks(1, "c")
    assert first == again
    for column in (1, 2, 3):  # few-shot examples, a Map's own draw, expand-list's pick
        assert [row[column] for row in first] != [row[column] for row in other], column


def test_the_seed_actually_used_is_recorded_after_a_retry(tmp_path: Path) -> None:
    seen: list[Request] = []

    def flaky(request: Request) -> str | BaseException:
        seen.append(request)
        return RetryableError("busy") if len(seen) == 1 else "fine"

    script = Script(flaky)
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "x"}])
    run(pipeline(TextGeneration(), script=script), tmp_path / "out", data)
    [record] = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert len(seen) == 2 and seen[0].seed != seen[1].seed
    assert record["_meta"]["seed"] == seen[1].seed


def test_self_chat_honours_its_sampling_and_window(tmp_path: Path) -> None:
    script = Script(lambda r: "Tell me more.")
    data = write_jsonl(tmp_path / "in.jsonl", [{"question": f"q{i}"} for i in range(5)])
    step = SelfChat(turns=2, window=1, sampling={"stop": ["###"], "max_tokens": 17})
    run(pipeline(step, script=script), tmp_path / "out", data)
    assistant = [r for r in script.requests if r.max_tokens == 17]
    assert assistant and all(r.stop == ("###",) for r in assistant)
    assert len(read_jsonl(tmp_path / "out" / "records.jsonl")) == 5
    with pytest.raises(ValueError, match="n"):
        SelfChat(n=3)  # no silently ignored options


def test_a_partial_sampling_mapping_keeps_the_steps_defaults() -> None:
    step = SelfInstructClassify(sampling={"max_tokens": 5})
    assert (step.options.sampling.temperature, step.options.sampling.max_tokens) == (0.0, 5)


def test_sampling_options_at_the_top_level_get_a_hint(tmp_path: Path) -> None:
    from synthaug.pipeline import Recipe

    recipe = Recipe.model_validate({"name": "r", "steps": [
        {"use": "text-generation", "with": {"temperature": 0.1}}]})
    with pytest.raises(ConfigError, match="sampling"):
        Pipeline.from_recipe(recipe, "r.yaml")


def test_system_template_fields_are_required() -> None:
    step = ExpandList(template="{topic}", system="You are {persona}.")
    pipe = Pipeline.from_steps(step)
    assert set(pipe.input_requirements()) == {"topic", "persona"}


def test_failures_follow_one_policy_in_every_family(tmp_path: Path) -> None:
    script = Script(lambda r: RetryableError("down"))
    data = write_jsonl(tmp_path / "in.jsonl", [{"q": "x"}])
    for i, step in enumerate([AskEach(), AskGenerator(), SelfChat(opening_field="q")]):
        out = tmp_path / f"out{i}"
        run(pipeline(step, script=script), out, data)
        failures = read_jsonl(out / "failures.jsonl")
        assert failures and all("down" in f["reason"] and f["record"] for f in failures)
        assert read_jsonl(out / "records.jsonl") == []


class Numbers(Map[StepOptions]):
    def provides(self) -> set[str]:
        return {"instruction"}

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        yield {**content(record), "instruction": record["value"]}


def test_a_non_string_template_value_is_rejected_not_sent(tmp_path: Path) -> None:
    script = Script()
    values: list[Any] = ["fine", 42, None, ["a"], {"k": "v"}, True]
    data = write_jsonl(tmp_path / "in.jsonl", [{"value": v} for v in values])
    run(pipeline(Numbers(), TextGeneration(), script=script), tmp_path / "out", data)
    assert [text_of(r) for r in script.requests] == ["fine"]
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert len(rejects) == 5 and {r["field"] for r in rejects} == {"instruction"}
    assert any("must be a string, got int" in r["reason"] for r in rejects)


def test_tuning_options_are_not_part_of_the_run_identity() -> None:
    from synthaug.steps.curate.dedup import MinHashDedup

    script = Script()
    built = {"default": script.spec()}
    from synthaug.pipeline import build_backend

    backends = {"default": build_backend(built["default"])}
    slow = pipeline(TextGeneration(window=1), MinHashDedup(fields=["generation"], workers=1),
                    script=script).identity(backends)
    fast = pipeline(TextGeneration(window=64), MinHashDedup(fields=["generation"], workers=4),
                    script=script).identity(backends)
    hotter = pipeline(TextGeneration(sampling={"temperature": 1.0}), script=script)
    assert slow == fast
    assert hotter.identity(backends)["steps"] != slow["steps"]


def test_an_unknown_benchmark_fails_when_the_recipe_is_built() -> None:
    from synthaug.pipeline import Recipe

    recipe = Recipe.model_validate({"name": "r", "steps": [
        {"use": "decontaminate", "with": {"benchmarks": ["gsm9k"]}}]})
    with pytest.raises(ConfigError, match="gsm9k") as info:
        Pipeline.from_recipe(recipe, "r.yaml")
    assert info.value.field == "benchmarks"
