"""Exactly-once resume after kill -9 of a real `synthaug run` process."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthaug.io import RecordWriter
from synthaug.testing import FakeOpenAIServer
from tests.conftest import read_jsonl, write_jsonl

N = 300


def cached_prompts(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT completion FROM responses").fetchall()
    return {json.loads(r[0])["text"].removeprefix("echo: ") for r in rows}


def cli(url: str, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "synthaug.cli", "run", "text-generation", "-i", str(data),
            "-o", str(out), "--base-url", url, "--model", "fake", "--concurrency", "8", "-q"]


def test_kill_9_then_rerun_gives_each_record_once_and_pays_nothing_twice(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"instruction": f"p{i}"} for i in range(N)])
    out = tmp_path / "out"
    with FakeOpenAIServer(delay=0.05) as srv:
        proc = subprocess.Popen(cli(srv.url, data, out))
        records = out / "records.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if records.exists() and records.read_bytes().count(b"\n") >= N // 4:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        written_before = len(read_jsonl(records))
        paid_before = cached_prompts(out / "cache.sqlite")
        calls_before = len(srv.calls)
        assert 0 < written_before < N, "the kill must land mid-run"

        subprocess.run(cli(srv.url, data, out), check=True)
        rerun_prompts = [c["messages"][-1]["content"] for c in srv.calls[calls_before:]]

    final = read_jsonl(records)
    ids = [r["_meta"]["id"] for r in final]
    assert len(final) == N and len(set(ids)) == N
    assert sorted(r["instruction"] for r in final) == sorted(f"p{i}" for i in range(N))
    assert not set(rerun_prompts) & paid_before  # nothing cached was paid for again
    assert len(rerun_prompts) == len(set(rerun_prompts)) == N - len(paid_before)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["total_records"] == N


def test_a_partial_last_line_is_cut_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"a":1,"_meta":{"id":"x1"}}\n{"a":2,"_meta":{"id":"x2"}}\n{"a":3,"_me')
    writer = RecordWriter(path)
    assert writer.seen == {"x1", "x2"}
    assert writer.write({"a": 3, "_meta": {"id": "x3"}})
    assert not writer.write({"a": 1, "_meta": {"id": "x1"}})
    assert writer.seen == {"x1", "x2"}  # only the earlier run's ids are held
    writer.close()
    assert [r["a"] for r in read_jsonl(path)] == [1, 2, 3]


def test_corrupt_lines_mid_file_are_set_aside_and_the_rest_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "records.jsonl"
    good = ['{"a":1,"_meta":{"id":"x1"}}\n', '{"a":3,"_meta":{"id":"x3"}}\n',
            '{"a":5,"_meta":{"id":"x5"}}\n']
    path.write_text(good[0] + '{"a":2,"_me\n' + good[1] + '[1, 2]\n' + good[2] + '{"a":6')
    with caplog.at_level(logging.WARNING):
        writer = RecordWriter(path)
    writer.close()
    assert writer.seen == {"x1", "x3", "x5"} and writer.resumed == 3
    assert path.read_text() == "".join(good)
    assert read_jsonl(tmp_path / "records.corrupt.jsonl") == [
        {"line": 2, "raw": '{"a":2,"_me'}, {"line": 4, "raw": "[1, 2]"}]
    assert "2 corrupt line(s) (line 2, 4) moved to records.corrupt.jsonl" in caplog.text
    assert "cut a partial last line (line 6, 6 bytes)" in caplog.text
    assert not list(tmp_path.glob("*.tmp"))
