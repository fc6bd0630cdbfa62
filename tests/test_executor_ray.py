"""The Ray executor against a local Ray (2 CPUs): same output as the local executor, global
steps combined across shards, exactly once through killed workers and a killed driver, a
cache every worker reads so a rerun makes no call."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

ray = pytest.importorskip("ray", reason="the ray executor needs synthaug[ray]")

import cloudpickle  # noqa: E402  (comes with ray)

from synthaug.executors.base import RunConfig, RunState  # noqa: E402
from synthaug.executors.local import LocalExecutor  # noqa: E402
from synthaug.executors.ray_executor import RayExecutor, RayOptions  # noqa: E402
from synthaug.executors.segments import plan_segments  # noqa: E402
from synthaug.executors.shuffle import SHIFT, decide, shared_keys, write_keys  # noqa: E402
from synthaug.pipeline import Pipeline  # noqa: E402
from synthaug.records import Record  # noqa: E402
from synthaug.steps.base import Global, Map, StepOptions  # noqa: E402
from synthaug.steps.context import StepContext  # noqa: E402
from synthaug.steps.curate.dedup import ExactDedup, MinHashDedup  # noqa: E402
from synthaug.steps.curate.quality import RepetitionFilter  # noqa: E402
from synthaug.steps.sharded import FirstIndex  # noqa: E402
from synthaug.testing import FakeOpenAIServer  # noqa: E402
from tests.conftest import read_jsonl, text_generation, write_jsonl  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def corpus(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Documents with exact and near copies spread over the whole file (across shards),
    degenerate repeats, a malformed line's worth of bad rows and a repeated id."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if rows and rng.random() < 0.25:
            words = rng.choice(rows)["text"].split()
            if rng.random() < 0.5:
                words[rng.randrange(len(words))] = rng.choice(vocab)
        else:
            words = rng.choices(vocab, k=60)
        if rng.random() < 0.05:
            words = words[:6] * 10
        rows.append({"id": i, "text": " ".join(words)})
    return rows


def write_input(path: Path, rows: list[dict[str, Any]]) -> Path:
    lines = [json.dumps(r) for r in rows]
    lines.insert(7, "{not json")
    lines.insert(40, json.dumps({"id": 3, "text": "a repeated id"}))
    lines.insert(90, json.dumps({"id": 9999}))  # no text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Upper(Map[StepOptions]):
    """A per-record step after the dedup: the text upper-cased."""

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        yield {**record, "text": str(record["text"]).upper()}


def curation() -> Pipeline:
    return Pipeline(steps=[("repetition", RepetitionFilter()), ("exact", ExactDedup()),
                           ("near", MinHashDedup(num_perm=64, threshold=0.7)),
                           ("upper", Upper())], name="curation")


def sorted_rows(path: Path) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(path))


def ray_run(pipeline: Pipeline, out: Path, data: Path | None, **options: Any) -> RunState:
    chosen = RayOptions(workers=2, shard_size=options.pop("shard_size", 40), **options)
    return RayExecutor(RunConfig(out_dir=out, input_path=data), options=chosen).run(pipeline)


def test_curation_on_ray_gives_the_local_output_byte_for_byte(tmp_path: Path) -> None:
    data = write_input(tmp_path / "in.jsonl", corpus(400))
    local = LocalExecutor(RunConfig(out_dir=tmp_path / "local", input_path=data)).run(curation())
    state = ray_run(curation(), tmp_path / "ray", data, shard_size=37)
    assert state.status == local.status == "partial"  # the three bad lines are rejected
    assert state.executor["segments"][0]["parts"] == 11  # really sharded
    local_out = (tmp_path / "local/records.jsonl").read_bytes()
    assert (tmp_path / "ray/records.jsonl").read_bytes() == local_out
    for side in ("dropped", "rejects"):
        assert sorted_rows(tmp_path / "ray" / f"{side}.jsonl") == \
            sorted_rows(tmp_path / "local" / f"{side}.jsonl")
    near = {s.label: s for s in state.steps}["near"]
    assert near.dropped["near duplicate"] > 10 and near.notes["duplicates"] == \
        {s.label: s for s in local.steps}["near"].notes["duplicates"]


def test_dedup_across_shards_is_not_dedup_within_each_shard(tmp_path: Path) -> None:
    rows = [{"id": i, "text": f"document number {i % 5} " + "filler " * 20} for i in range(60)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    pipeline = Pipeline(steps=[("exact", ExactDedup())], name="exact")
    state = ray_run(pipeline, tmp_path / "ray", data, shard_size=6)  # each copy in 10 shards
    # keys written by the shards, settled after the shuffle: no segment gathers the stream
    assert [s["name"] for s in state.executor["segments"]] == ["s00-shard", "s01-shard"]
    kept = read_jsonl(tmp_path / "ray/records.jsonl")
    assert [r["id"] for r in kept] == [0, 1, 2, 3, 4]
    assert state.steps[0].dropped["exact duplicate"] == 55


def test_rerun_reuses_every_committed_part(tmp_path: Path) -> None:
    data = write_input(tmp_path / "in.jsonl", corpus(200))
    first = ray_run(curation(), tmp_path / "out", data)
    again = ray_run(curation(), tmp_path / "out", data)
    assert again.written == 0 and again.resumed == first.written
    assert again.executor["reused_parts"] == sum(s["parts"] for s in first.executor["segments"])
    assert all(s["ran"] == 0 for s in again.executor["segments"])
    ids = [r["_meta"]["id"] for r in read_jsonl(tmp_path / "out/records.jsonl")]
    assert len(ids) == len(set(ids)) == first.written


class DieOptions(StepOptions):
    marker: str  # a file: written just before the process dies, so it dies once


class DieOnce(Map[DieOptions]):
    """Kills its own worker process the first time it meets record 33."""

    Options: ClassVar[type[StepOptions]] = DieOptions

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        if record.get("id") == 33 and not os.path.exists(self.options.marker):
            Path(self.options.marker).write_text("died", encoding="utf-8")
            os._exit(1)
        yield record


def test_a_killed_worker_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "died"
    rows = [{"id": i, "text": f"text {i}"} for i in range(120)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    pipeline = Pipeline(steps=[("die", DieOnce(marker=str(marker))), ("exact", ExactDedup())],
                        name="die")
    state = ray_run(pipeline, tmp_path / "out", data, shard_size=10)
    assert marker.exists()  # a worker really died mid-part
    assert state.status == "complete"
    ids = [r["id"] for r in read_jsonl(tmp_path / "out/records.jsonl")]
    assert sorted(ids) == list(range(120))


def llm_pipeline(url: str, concurrency: int = 8) -> Pipeline:
    # a static limit: each actor would fill its whole share at once
    return text_generation(url, concurrency=concurrency, template="Say {text}",
                           adaptive=False)


def test_llm_steps_run_on_actor_pools_and_a_rerun_makes_no_call(tmp_path: Path) -> None:
    rows = [{"id": i, "text": f"item {i}"} for i in range(60)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    with FakeOpenAIServer(delay=0.05) as server:
        state = ray_run(llm_pipeline(server.url), tmp_path / "out", data, shard_size=10)
        assert state.status == "complete" and state.written == 60
        assert len(server.calls) == 60 == state.calls()
        assert server.max_in_flight <= 8  # the role's concurrency is shared by the actors
        assert len(set(state.executor["worker_max_rss_mb"])) == 2  # two actors worked
        made = read_jsonl(tmp_path / "out/records.jsonl")
        assert sorted(r["generation"] for r in made) == sorted(f"echo: Say item {i}" for i in
                                                               range(60))
        assert {r["_meta"]["model"] for r in made} == {"fake"}
        # the workers' cache files were folded into the main cache: a fresh output from the
        # same cache calls nothing, on Ray and locally
        assert not (tmp_path / "out/cache.sqlite.workers").exists() or \
            not list((tmp_path / "out/cache.sqlite.workers").glob("*.sqlite"))
        cfg = RunConfig(out_dir=tmp_path / "out", input_path=data, overwrite=True)
        again = RayExecutor(cfg, options=RayOptions(workers=2, shard_size=10)).run(
            llm_pipeline(server.url))
        assert again.written == 60 and len(server.calls) == 60
        local = LocalExecutor(RunConfig(out_dir=tmp_path / "local", input_path=data,
                                        cache_path=tmp_path / "out/cache.sqlite")).run(
            llm_pipeline(server.url))
        assert local.written == 60 and len(server.calls) == 60


def test_failed_calls_become_failure_rows_and_are_retried_by_a_rerun(tmp_path: Path) -> None:
    rows = [{"id": i, "text": f"item {i}"} for i in range(30)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)

    with FakeOpenAIServer() as server:
        server.responder = lambda body: (_refuse() if "item 7" in json.dumps(body)
                                         and not (tmp_path / "healed").exists() else "fine")
        pipeline = text_generation(server.url, concurrency=4, template="Say {text}",
                                   max_retries=0)
        state = ray_run(pipeline, tmp_path / "out", data, shard_size=10)
        assert state.status == "partial" and state.written == 29
        failures = read_jsonl(tmp_path / "out/failures.jsonl")
        assert [f["record"]["text"] for f in failures] == ["item 7"]
        (tmp_path / "healed").write_text("", encoding="utf-8")
        calls = len(server.calls)
        again = ray_run(text_generation(server.url, concurrency=4, template="Say {text}",
                                        max_retries=0), tmp_path / "out", data, shard_size=10)
        assert again.status == "complete" and again.written == 1
        assert len(server.calls) - calls == 1  # only the failed record's part ran again,
        assert again.executor["reused_parts"] == 2  # its 9 answered calls from the cache


def _refuse() -> Any:
    from synthaug.testing.server import Reply

    return Reply(status=400, body=json.dumps({"error": {"message": "refused"}}))


def test_the_executor_is_part_of_what_a_folder_resumes_with(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "x"}])
    pipeline = Pipeline(steps=[("exact", ExactDedup())], name="exact")
    LocalExecutor(RunConfig(out_dir=tmp_path / "out", input_path=data)).run(pipeline)
    from synthaug.errors import ConfigError

    with pytest.raises(ConfigError, match="--executor local"):
        ray_run(pipeline, tmp_path / "out", data)


def test_killing_the_driver_mid_run_then_rerunning_writes_each_record_once(
        tmp_path: Path) -> None:
    rows = [{"instruction": f"task {i}", "id": i} for i in range(80)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with FakeOpenAIServer(delay=0.15) as server:
        command = [sys.executable, "-m", "synthaug.cli", "run", "text-generation", "--input",
                   str(data), "--out", str(out), "--backend", "openai", "--base-url",
                   server.url, "--model", "fake", "--concurrency", "4", "-q",
                   "--executor", "ray", "--executor-option", "workers=2",
                   "--executor-option", "shard_size=10"]
        env = {**os.environ, "RAY_ADDRESS": ""}
        driver = subprocess.Popen(command, env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        parts = out / "shards" / "s00-shard"
        deadline = time.time() + 120
        while time.time() < deadline and len(list(parts.glob("part-?????"))) < 2:
            time.sleep(0.1)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
        committed = len(list(parts.glob("part-?????")))
        assert 2 <= committed < 8
        first_calls = len(server.calls)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        made = read_jsonl(out / "records.jsonl")
        assert Counter(r["_meta"]["id"] for r in made).most_common(1)[0][1] == 1
        assert sorted(r["instruction"] for r in made) == sorted(f"task {i}" for i in range(80))
        # the committed parts' answers are not paid again
        assert len(server.calls) - first_calls <= 80 - 10 * committed


class Numbered(Global[StepOptions]):
    """A global step with no shard-combine rule: numbers records across the whole stream."""

    def __init__(self, options: StepOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.count = 0

    def observe(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        self.count += 1
        yield {**record, "position": self.count}


def test_a_global_step_without_a_combine_rule_sees_the_whole_stream_in_order(
        tmp_path: Path) -> None:
    rows = [{"id": i, "text": f"text {i % 50}"} for i in range(130)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)

    def pipeline() -> Pipeline:
        return Pipeline(steps=[("upper", Upper()), ("number", Numbered()),
                               ("exact", ExactDedup()), ("again", Upper())], name="gather")

    local = LocalExecutor(RunConfig(out_dir=tmp_path / "local", input_path=data)).run(
        pipeline())
    state = ray_run(pipeline(), tmp_path / "ray", data, shard_size=20)
    assert [s["name"] for s in state.executor["segments"]] == \
        ["s00-shard", "s01-gather", "s02-shard", "s03-shard"]
    assert (tmp_path / "ray/records.jsonl").read_bytes() == \
        (tmp_path / "local/records.jsonl").read_bytes()
    assert [r["position"] for r in read_jsonl(tmp_path / "ray/records.jsonl")] == \
        list(range(1, 51))
    assert state.written == local.written == 50


def test_segments_cut_where_the_stream_must_be_whole() -> None:
    steps = [("a", Upper()), ("b", Upper()), ("near", MinHashDedup()), ("c", Upper()),
             ("n", Numbered()), ("m", Numbered()), ("exact", ExactDedup()),
             ("exact2", ExactDedup())]
    found = [(s.kind, s.settle, s.steps, s.keys)
             for s in plan_segments(Pipeline(steps=steps, name="p"))]
    assert found == [("shard", None, [0, 1], 2), ("shard", 2, [3], None),
                     ("gather", None, [4, 5], None), ("shard", None, [], 6),
                     ("shard", 6, [], 7), ("shard", 7, [], None)]


def test_the_shuffled_decision_is_the_single_process_one(tmp_path: Path) -> None:
    rng = random.Random(5)
    parts = [[[rng.randrange(40) for _ in range(3)] for _ in range(rng.randrange(1, 30))]
             for _ in range(6)]
    index: FirstIndex[int] = FirstIndex()
    expected = {}
    for part, records in enumerate(parts):
        for i, keys in enumerate(records):
            first = index.offer(part << SHIFT | i, keys)
            if first is not None:
                expected[part << SHIFT | i] = first
    folders = []
    for part, records in enumerate(parts):
        folder = tmp_path / f"part-{part}"
        folder.mkdir()
        write_keys(folder, part, records, buckets=4)
        folders.append(folder)
    assert decide([shared_keys(folders, b) for b in range(4)]) == expected
    assert expected  # the draw made duplicates


def test_worker_cache_files_read_through_and_fold_into_the_main_cache(tmp_path: Path) -> None:
    from synthaug.backends.base import Completion
    from synthaug.backends.cache import ResponseCache, merge_caches, worker_cache

    main = ResponseCache(tmp_path / "cache.sqlite")
    main.put("old", "sha", Completion(text="from main"))
    worker = worker_cache(main.path, "w1")
    assert worker.get("old").text == "from main"  # type: ignore[union-attr]
    worker.put("new", "sha", Completion(text="from a worker"))
    worker.close()
    assert main.get("new") is None
    assert merge_caches(main) == 1
    assert main.get("new").text == "from a worker"  # type: ignore[union-attr]
    assert not list((tmp_path / "cache.sqlite.workers").glob("*.sqlite"))


def test_the_recipe_chooses_the_executor_and_a_typo_names_its_field(tmp_path: Path) -> None:
    from synthaug.budget import Budget
    from synthaug.errors import ConfigError
    from synthaug.overrides import build_executor, build_pipeline

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ninput: required\nexecutor: {use: ray, with: {workers: 3}}\n"
                      "steps:\n  - use: exact-dedup\n", encoding="utf-8")
    pipeline = build_pipeline(str(recipe), backends_file=None, choices={},
                              backend_options=None, sets=None)
    config = RunConfig(out_dir=tmp_path / "out")
    chosen = build_executor(pipeline, name=None, options=["shard_size=7"], config=config)
    assert isinstance(chosen, RayExecutor)
    assert (chosen.options.workers, chosen.options.shard_size) == (3, 7)
    assert isinstance(build_executor(pipeline, name="local", options=None, config=config),
                      LocalExecutor)
    with pytest.raises(ConfigError) as typo:
        build_executor(pipeline, name=None, options=["workerz=2"], config=config)
    assert typo.value.field == "executor.workerz"
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    budgeted = RunConfig(out_dir=tmp_path / "b", input_path=data, budget=Budget(max_tokens=9))
    with pytest.raises(ConfigError, match="local executor only"):
        RayExecutor(budgeted, options=RayOptions(workers=1)).run(pipeline)
    assert not (tmp_path / "b").exists()  # refused before anything was touched


def test_the_python_api_takes_the_executor(tmp_path: Path) -> None:
    import synthaug

    rows = [{"id": i, "text": f"text {i % 4}"} for i in range(12)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    state = synthaug.run(Pipeline(steps=[("exact", ExactDedup())], name="api"),
                         str(tmp_path / "out"), input_path=str(data), executor="ray",
                         executor_options={"workers": 2, "shard_size": 3})
    assert state.executor["segments"][0]["parts"] == 4 and state.written == 4
    assert json.loads((tmp_path / "out/manifest.json").read_text())["executor"]["name"] == "ray"


def test_parquet_input_is_sharded_by_rows_with_the_local_result(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = corpus(120)
    rows[50] = {"id": 7, "text": "a repeated id"}
    data = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data, row_group_size=16)  # groups != shards
    local = LocalExecutor(RunConfig(out_dir=tmp_path / "local", input_path=data)).run(curation())
    state = ray_run(curation(), tmp_path / "ray", data, shard_size=25)
    assert state.executor["segments"][0]["parts"] == 5
    assert (tmp_path / "ray/records.jsonl").read_bytes() == \
        (tmp_path / "local/records.jsonl").read_bytes()
    assert sorted_rows(tmp_path / "ray/rejects.jsonl") == \
        sorted_rows(tmp_path / "local/rejects.jsonl")
    assert [r["line"] for r in read_jsonl(tmp_path / "ray/rejects.jsonl")] == [51]
    assert state.written == local.written > 80


def test_the_dedup_command_runs_on_ray_with_the_local_result(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from synthaug.cli import app

    data = write_input(tmp_path / "in.jsonl", corpus(150))
    runner = CliRunner()
    local = runner.invoke(app, ["dedup", str(data), "-o", str(tmp_path / "local"),
                                "--method", "minhash", "--field", "text"])
    on_ray = runner.invoke(app, ["dedup", str(data), "-o", str(tmp_path / "ray"), "--method",
                                 "minhash", "--field", "text", "--executor", "ray",
                                 "--executor-option", "workers=2",
                                 "--executor-option", "shard_size=20"])
    assert local.exit_code == on_ray.exit_code == 3, on_ray.output  # 3: the bad input lines
    manifest = json.loads((tmp_path / "ray/manifest.json").read_text())
    assert manifest["executor"]["name"] == "ray"
    assert manifest["executor"]["segments"][0]["parts"] == 8
    assert (tmp_path / "ray/records.jsonl").read_bytes() == \
        (tmp_path / "local/records.jsonl").read_bytes()
