"""A run's lifecycle from the command line: identity, validate-then-act, input policy, exit
codes and status, timeouts, typed overrides, recovery, interruption.

Everything goes through the real CLI (typer's CliRunner, or a `synthaug run` subprocess)
against the real in-process HTTP server; assertions are on exit codes, files and calls.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from synthaug import registry
from synthaug.cli import app
from synthaug.errors import StepError
from synthaug.pipeline import BackendSpec, Pipeline
from synthaug.records import Record
from synthaug.steps.base import Generator, Map, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Uses
from synthaug.testing import FakeOpenAIServer, Reply
from tests.conftest import read_jsonl, run, write_jsonl

runner = CliRunner()


def cli(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def gen(server: FakeOpenAIServer, data: Path, out: Path, *extra: str | Path) -> Result:
    """`synthaug run text-generation` against the fake server."""
    return cli("run", "text-generation", "-i", data, "-o", out, "--base-url", server.url,
               "-q", *extra)


def rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"instruction": f"task {i}"} for i in range(start, start + n)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def manifest(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((out / "manifest.json").read_text())
    return data


# -- 1. run identity ---------------------------------------------------------------------------

def test_another_model_is_refused_before_any_call(server: FakeOpenAIServer,
                                                  tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out"
    assert gen(server, data, out, "--model", "a").exit_code == 0
    other = gen(server, data, out, "--model", "b")
    assert other.exit_code == 2, other.output
    assert "backend 'default' model: 'a' -> 'b'" in other.output
    assert "--overwrite" in other.output and "--out" in other.output
    assert len(server.calls) == 3
    assert {r["_meta"]["model"] for r in read_jsonl(out / "records.jsonl")} == {"a"}


def test_a_refused_rerun_touches_no_file(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(3)) + "{broken\n")
    out = tmp_path / "out"
    first = gen(server, data, out, "--model", "a")
    assert first.exit_code == 3, first.output  # the broken line is a reject
    before, calls = snapshot(out), len(server.calls)
    assert {"records.jsonl", "rejects.jsonl", "manifest.json", "cache.sqlite"} <= set(before)

    other = gen(server, data, out, "--model", "b", "--cache", tmp_path / "other.sqlite")
    assert other.exit_code == 2, other.output
    assert len(server.calls) == calls
    assert snapshot(out) == before  # no manifest rewrite, no side-file reset
    assert not (tmp_path / "other.sqlite").exists()  # no cache file created

    replaced = gen(server, data, out, "--model", "b", "--overwrite")
    assert replaced.exit_code == 3, replaced.output
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == 3 and {r["_meta"]["model"] for r in records} == {"b"}
    assert {c["model"] for c in server.calls[calls:]} == {"b"}


@pytest.mark.parametrize(("change", "words"), [
    (["--seed", "1"], "seed 0 -> 1"),
    (["--set", "generate.template=Answer: {instruction}"],
     "step 'generate' options (template: '{instruction}' -> 'Answer: {instruction}')"),
    (["--set", "generate.sampling.temperature=0.1"],
     "step 'generate' options (sampling.temperature: 0.7 -> 0.1)"),
    (["--id-field", "uid"], "input id field 'id' -> 'uid'"),
])
def test_a_changed_identity_is_named_in_plain_words(server: FakeOpenAIServer, tmp_path: Path,
                                                    change: list[str], words: str) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(2))
    assert gen(server, data, tmp_path / "o").exit_code == 0
    calls = len(server.calls)
    refused = gen(server, data, tmp_path / "o", *change)
    assert refused.exit_code == 2 and words in refused.output, refused.output
    assert len(server.calls) == calls


def test_appended_input_lines_resume_and_changed_ones_are_refused(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out"
    assert gen(server, data, out).exit_code == 0
    with data.open("a") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows(2, start=3)))
    grown = gen(server, data, out)
    assert grown.exit_code == 0, grown.output
    assert len(server.calls) == 5  # only the two new lines were paid for
    assert sorted(r["instruction"] for r in read_jsonl(out / "records.jsonl")) == [
        f"task {i}" for i in range(5)]

    write_jsonl(data, [{"instruction": "changed"}, *rows(4, start=1)])
    changed = gen(server, data, out)
    assert changed.exit_code == 2 and "input file content differs" in changed.output
    assert len(server.calls) == 5


def test_the_same_content_elsewhere_resumes_and_limit_concurrency_timeout_do_not_count(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(4))
    out = tmp_path / "out"
    assert gen(server, data, out, "--limit", "2").exit_code == 0
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(data.read_bytes())
    again = gen(server, moved, out, "--concurrency", "2", "--timeout", "30")
    assert again.exit_code == 0, again.output
    assert len(server.calls) == 4 and len(read_jsonl(out / "records.jsonl")) == 4


def test_an_output_folder_without_identity_is_another_run(server: FakeOpenAIServer,
                                                          tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(2))
    out = tmp_path / "out"
    assert gen(server, data, out).exit_code == 0
    old = manifest(out)
    del old["identity"]
    (out / "manifest.json").write_text(json.dumps(old))
    refused = gen(server, data, out)
    assert refused.exit_code == 2 and "it has no run identity" in refused.output
    assert len(server.calls) == 2


# -- 2. validate everything, then act ------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    ["-i", "missing.jsonl"],
    ["--backend-option", "chat_tmplate=x"],
    ["--backend-option", "timeout=-1"],
    ["--format", "parqet"],
    ["--set", "generate.template={nope}"],
])
def test_overwrite_deletes_nothing_when_validation_fails(server: FakeOpenAIServer,
                                                         tmp_path: Path, bad: list[str]) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(2))
    out = tmp_path / "out"
    assert gen(server, data, out).exit_code == 0
    before, calls = snapshot(out), len(server.calls)
    args = [tmp_path / a if a.endswith(".jsonl") else a for a in bad]
    refused = cli("run", "text-generation", "-o", out, "--base-url", server.url, "-q",
                  "--overwrite", "-i", data, *args)
    assert refused.exit_code == 2, refused.output
    assert "Traceback" not in refused.output
    assert snapshot(out) == before and len(server.calls) == calls


def test_an_unknown_format_names_the_field_and_the_valid_values(server: FakeOpenAIServer,
                                                                tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(2))
    result = gen(server, data, tmp_path / "out", "--format", "parqet")
    assert result.exit_code == 2
    assert "field format" in result.output and "'parqet'" in result.output
    assert "jsonl, parquet, hf, sft, alpaca" in result.output
    assert server.calls == [] and not (tmp_path / "out").exists()


def test_a_format_whose_package_is_missing_fails_before_any_call(
        server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    data = write_jsonl(tmp_path / "in.jsonl", rows(2))
    result = gen(server, data, tmp_path / "out", "--format", "parquet")
    assert result.exit_code == 2, result.output
    assert "pip install 'synthaug[parquet]'" in result.output
    assert server.calls == [] and not (tmp_path / "out").exists()


def test_overwrite_replaces_the_output_and_keeps_the_cache(server: FakeOpenAIServer,
                                                           tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out"
    assert gen(server, data, out).exit_code == 0
    (out / "failures.jsonl").write_text('{"stale": true}\n')
    again = gen(server, data, out, "--overwrite")
    assert again.exit_code == 0, again.output
    assert len(server.calls) == 3  # the kept cache answered everything
    assert len(read_jsonl(out / "records.jsonl")) == 3 and manifest(out)["resumed"] == 0
    assert not (out / "failures.jsonl").exists()


# -- 3. input policy ---------------------------------------------------------------------------

def test_a_bom_and_crlf_line_ends_are_accepted(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(b'\xef\xbb\xbf{"instruction": "first"}\r\n{"instruction": "second"}\r\n'
                     b'{"instruction": \r\n')
    out = tmp_path / "out"
    result = gen(server, data, out)
    assert result.exit_code == 3, result.output
    assert sorted(r["instruction"] for r in read_jsonl(out / "records.jsonl")) == [
        "first", "second"]
    [reject] = read_jsonl(out / "rejects.jsonl")
    assert reject["line"] == 3 and reject["raw"] == '{"instruction": '


def test_fields_of_the_wrong_type_are_rejected_with_their_reason(server: FakeOpenAIServer,
                                                                 tmp_path: Path) -> None:
    values = [5, ["a"], None, {"a": 1}, True, 1.5]
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "fine"}]
                       + [{"instruction": v} for v in values])
    out = tmp_path / "out"
    assert gen(server, data, out).exit_code == 3
    assert [c["messages"][-1]["content"] for c in server.calls] == ["fine"]
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [(r["file"], r["line"], r["field"]) for r in rejects] == [
        (str(data), line, "instruction") for line in range(2, 8)]
    assert [r["reason"] for r in rejects] == [
        f"field 'instruction' must be a string, got {kind}"
        for kind in ("int", "list", "null", "dict", "bool", "float")]


def test_repeated_ids_and_lines_are_rejected_the_first_wins(server: FakeOpenAIServer,
                                                            tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [
        {"id": 1, "instruction": "a"}, {"id": 2, "instruction": "b"},
        {"id": 1, "instruction": "c"}, {"instruction": "d"}, {"instruction": "d"}])
    out = tmp_path / "out"
    assert gen(server, data, out).exit_code == 3
    assert sorted(r["instruction"] for r in read_jsonl(out / "records.jsonl")) == ["a", "b", "d"]
    assert [(r["line"], r["reason"]) for r in read_jsonl(out / "rejects.jsonl")] == [
        (3, "duplicate of line 1"), (5, "duplicate of line 4")]
    own = gen(server, data, tmp_path / "own", "--id-field", "instruction")
    assert own.exit_code == 3
    assert [(r["line"], r["reason"]) for r in read_jsonl(tmp_path / "own" / "rejects.jsonl")] \
        == [(5, "duplicate of line 4")]


def test_empty_input_warns_and_exits_0(server: FakeOpenAIServer, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\xef\xbb\xbf\n\n")
    with caplog.at_level(logging.WARNING):
        result = gen(server, data, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert [r.getMessage() for r in caplog.records] == [
        f"{data} holds no input records: nothing to do"]
    assert read_jsonl(tmp_path / "out" / "records.jsonl") == [] and server.calls == []
    assert manifest(tmp_path / "out")["status"] == "complete"


# -- 4. exit codes and status ------------------------------------------------------------------

def test_failures_exit_3_with_status_partial(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda body: Reply(status=500) if "task 1" in json.dumps(body) \
        else Reply(text="ok")
    data = write_jsonl(tmp_path / "in.jsonl", rows(3))
    out = tmp_path / "out"
    result = gen(server, data, out, "--backend-option", "max_retries=0")
    assert result.exit_code == 3, result.output
    assert "partial: wrote 2 new records" in result.output and "1 failures" in result.output
    assert manifest(out)["status"] == "partial"
    server.responder = lambda body: Reply(text="fixed")
    assert gen(server, data, out, "--backend-option", "max_retries=0").exit_code == 0
    assert manifest(out)["status"] == "complete" and len(read_jsonl(out / "records.jsonl")) == 3


class Boom(Map):
    Options = StepOptions

    def apply(self, record: Record, ctx: StepContext) -> Iterable[Record]:
        raise StepError("the between-rounds command exited 1")


def test_a_step_error_exits_1_with_one_line_and_status_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._extra_steps, "boom", Boom)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: boom\ninput: required\nsteps:\n  - use: boom\n")
    data = write_jsonl(tmp_path / "in.jsonl", rows(2))
    result = cli("run", recipe, "-i", data, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 1
    assert result.output.strip() == "error: the between-rounds command exited 1"
    assert manifest(tmp_path / "out")["status"] == "failed"


def run_cmd(url: str, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "synthaug.cli", "run", "text-generation", "-i", str(data),
            "-o", str(out), "--base-url", url, "--concurrency", "4", "-q"]


def test_ctrl_c_exits_130_and_the_rerun_resumes(tmp_path: Path) -> None:
    n = 200
    data = write_jsonl(tmp_path / "in.jsonl", rows(n))
    out = tmp_path / "out"
    records = out / "records.jsonl"
    with FakeOpenAIServer(delay=0.05) as srv:
        proc = subprocess.Popen(run_cmd(srv.url, data, out), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if records.exists() and records.read_bytes().count(b"\n") >= 20:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted: rerun the same command to resume" in err
        assert "Traceback" not in err
        assert manifest(out)["status"] == "interrupted"
        assert 0 < len(read_jsonl(records)) < n, "the interrupt must land mid-run"
        rerun = subprocess.run(run_cmd(srv.url, data, out), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    final = read_jsonl(records)
    assert len(final) == n and len({r["_meta"]["id"] for r in final}) == n
    assert manifest(out)["status"] == "complete"


def test_curation_verbs_follow_the_same_codes(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": f"text number {i}"} for i in range(3)])
    ok = cli("dedup", data, "-o", tmp_path / "d", "--method", "exact")
    assert ok.exit_code == 0, ok.output
    bad = cli("decontaminate", data, "-o", tmp_path / "x", "--action", "foo")
    assert bad.exit_code == 2 and "--action" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()
    method = cli("dedup", data, "-o", tmp_path / "m", "--method", "fuzzy")
    assert method.exit_code == 2 and "--method" in method.output
    missing = cli("dedup", tmp_path / "nope.jsonl", "-o", tmp_path / "n")
    assert missing.exit_code == 2 and "dataset not found" in missing.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": \n')
    measured = cli("measure", broken)
    assert measured.exit_code == 2 and f"{broken}:2" in measured.output
    partial = cli("dedup", broken, "-o", tmp_path / "p", "--method", "exact")
    assert partial.exit_code == 3 and len(read_jsonl(tmp_path / "p" / "rejects.jsonl")) == 1


# -- 5. timeouts -------------------------------------------------------------------------------

def test_timeout_flags_are_offered_and_applied(server: FakeOpenAIServer, tmp_path: Path) -> None:
    shown = cli("run", "--help")
    assert "--timeout" in shown.output and "--idle-timeout" in shown.output
    data = write_jsonl(tmp_path / "in.jsonl", rows(1))
    for flag, out in (("--timeout", tmp_path / "total"), ("--idle-timeout", tmp_path / "idle")):
        server.enqueue(Reply(delay=3.0))
        started = time.monotonic()
        result = gen(server, data, out, flag, "0.5")
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started < 2.5
        backends = manifest(out)["backends"]
        assert isinstance(backends, dict) and backends["default"]["retries"] == 1


# -- 6. typed --set and --backend-option -----------------------------------------------------

def test_set_values_are_typed_by_the_option(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    result = gen(server, data, tmp_path / "out", "--set", "generate.template={prompt}",
                 "--set", "generate.sampling.temperature=0.2",
                 "--set", "generate.sampling.max_tokens=7",
                 "--backend-option", "model={weird}")
    assert result.exit_code == 0, result.output
    [call] = server.calls
    assert call["messages"][-1]["content"] == "hello"
    assert (call["temperature"], call["max_tokens"], call["model"]) == (0.2, 7, "{weird}")


# -- 7. a corrupt line in records.jsonl ---------------------------------------------------------

def test_a_corrupt_line_mid_file_keeps_every_valid_line(
        server: FakeOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(5))
    out = tmp_path / "out"
    assert gen(server, data, out).exit_code == 0
    lines = (out / "records.jsonl").read_bytes().splitlines(keepends=True)
    lines[1] = b'{"instruction": "task 1", "_meta": {"id": \n'
    (out / "records.jsonl").write_bytes(b"".join(lines))
    with caplog.at_level(logging.WARNING):
        again = gen(server, data, out)
    assert again.exit_code == 0, again.output
    assert len(server.calls) == 5  # the lost record came back from the cache
    kept = (out / "records.jsonl").read_bytes().splitlines(keepends=True)
    assert kept[:4] == [lines[0], *lines[2:]] and len(kept) == 5
    assert manifest(out)["resumed"] == 4
    [aside] = read_jsonl(out / "records.corrupt.jsonl")
    assert aside == {"line": 2, "raw": lines[1].decode().rstrip("\n")}
    assert "1 corrupt line(s) (line 2) moved to records.corrupt.jsonl" in caplog.text


# -- 8. user mistakes give one line, never a traceback -----------------------------------------

@pytest.mark.parametrize(("args", "words"), [
    (["run", "text-generation", "-i", "{data}", "-o", "{out}", "--set", "nodot=1"],
     "STEP.FIELD=VALUE"),
    (["run", "text-generation", "-i", "{data}", "-o", "{out}", "--set", "nostep.x=1"],
     "no step named 'nostep'"),
    (["run", "text-generation", "-i", "{data}", "-o", "{out}", "--backend-option", "x"],
     "KEY=VALUE"),
    (["run", "text-generation", "-i", "{tmp}", "-o", "{out}"], "input is not a file"),
    (["run", "{recipe}", "-o", "{out}"], "no file 'nope.jsonl'"),
    (["run", "text-generation", "-i", "{data}", "-o", "{data}"], "not a folder"),
    (["inspect", "{tmp}"], "no manifest.json"),
    (["report", "{tmp}/none.jsonl"], "dataset not found"),
])
def test_user_mistakes_print_one_line_and_exit_2(tmp_path: Path, args: list[str],
                                                 words: str) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", rows(1))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndefault_input: nope.jsonl\nsteps:\n  - use: text-generation\n")
    names = {"data": data, "out": tmp_path / "out", "tmp": tmp_path, "recipe": recipe}
    result = cli(*[a.format(**names) for a in args])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- 11. steps get the clients of the roles they declare ---------------------------------------

class Roles(Generator):
    def __init__(self, *roles: str) -> None:
        super().__init__()
        self.roles = roles

    def uses(self) -> list[Uses]:
        return [Uses(role) for role in self.roles]

    async def generate(self, pool: list[Record], ctx: StepContext) -> AsyncIterator[Record]:
        for i, record in enumerate(pool or [{"_meta": {"id": "seed"}}]):
            yield ctx.derive([record], {"step": ctx.label, "clients": sorted(ctx.clients),
                                        "main": ctx.main_role}, i)


def test_each_step_gets_the_clients_of_its_roles_only(server: FakeOpenAIServer,
                                                      tmp_path: Path) -> None:
    spec = BackendSpec(use="openai", with_={"base_url": server.url})
    pipeline = Pipeline.from_steps(Roles("judge", "default"), Roles(), backends={
        "default": spec, "judge": spec, "unused": BackendSpec(use="openai")})
    state = run(pipeline, tmp_path / "out")
    assert sorted(state.clients) == ["default", "judge"]  # built for the roles in use
    [record] = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert (record["step"], record["clients"], record["main"]) == ("1-roles", [], None)
    made = json.loads((tmp_path / "out" / "manifest.json").read_text())["identity"]
    assert sorted(made["backends"]) == ["default", "judge"]
