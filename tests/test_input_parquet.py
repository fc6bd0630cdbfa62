"""Parquet input: rows read as records with the same checks, rejects and ids as JSONL lines."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synthaug.executors.base import RunConfig
from synthaug.executors.local import LocalExecutor
from synthaug.pipeline import Pipeline
from synthaug.steps.curate.dedup import ExactDedup
from tests.conftest import read_jsonl, write_jsonl

ROWS: list[dict[str, Any]] = [
    {"id": 1, "text": "alpha", "when": datetime.date(2024, 5, 1)},
    {"id": 2, "text": None, "when": datetime.date(2024, 5, 2)},  # text missing (null)
    {"id": 3, "text": "gamma", "when": datetime.date(2024, 5, 3)},
    {"id": 1, "text": "alpha again", "when": datetime.date(2024, 5, 4)},  # repeated id
    {"id": 5, "text": "alpha", "when": datetime.date(2024, 5, 5)},  # exact duplicate text
    {"id": 6, "text": "zeta", "when": datetime.date(2024, 5, 6)},
]


def write_parquet(path: Path, rows: list[dict[str, Any]], group: int = 2) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group)
    return path


def as_json_lines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: str(v) if isinstance(v, datetime.date) else v for k, v in row.items()}
            for row in rows]


def run(data: Path, out: Path, **kw: Any) -> list[dict[str, Any]]:
    pipeline = Pipeline(steps=[("exact", ExactDedup())], name="p")
    LocalExecutor(RunConfig(out_dir=out, input_path=data, **kw)).run(pipeline)
    return read_jsonl(out / "records.jsonl")


def test_parquet_rows_give_the_records_jsonl_lines_give(tmp_path: Path) -> None:
    parquet = run(write_parquet(tmp_path / "in.parquet", ROWS), tmp_path / "pq")
    lines = run(write_jsonl(tmp_path / "in.jsonl", as_json_lines(ROWS)), tmp_path / "js")
    assert [r["text"] for r in parquet] == ["alpha", "gamma", "zeta"]
    assert [r["when"] for r in parquet] == ["2024-05-01", "2024-05-03", "2024-05-06"]
    assert [r["_meta"]["id"] for r in parquet] == [r["_meta"]["id"] for r in lines]
    assert parquet[1]["_meta"]["source"] == f"{tmp_path / 'in.parquet'}:3"


def test_a_bad_row_is_rejected_with_file_row_and_field(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "in.parquet", ROWS)
    run(data, tmp_path / "out")
    rejects = {r["line"]: r for r in read_jsonl(tmp_path / "out/rejects.jsonl")}
    assert rejects[2]["field"] == "text" and rejects[2]["file"] == str(data)
    assert "must be a string" in rejects[2]["reason"] or "string" in rejects[2]["reason"]
    assert rejects[4]["reason"] == "duplicate of line 1"
    assert json.loads(rejects[4]["raw"])["text"] == "alpha again"  # the row, as JSON
    dropped = read_jsonl(tmp_path / "out/dropped.jsonl")
    assert [d["record"]["id"] for d in dropped] == [5]


def test_limit_counts_accepted_rows_across_row_groups(tmp_path: Path) -> None:
    data = write_parquet(tmp_path / "in.parquet", ROWS, group=1)
    assert [r["id"] for r in run(data, tmp_path / "out", limit=2)] == [1, 3]


def test_a_value_json_cannot_hold_rejects_its_row(tmp_path: Path) -> None:
    rows = [{"id": 1, "text": "a", "blob": b"\x00\x01"}, {"id": 2, "text": "b", "blob": None}]
    data = write_parquet(tmp_path / "in.parquet", rows)
    assert [r["id"] for r in run(data, tmp_path / "out")] == [2]
    [reject] = read_jsonl(tmp_path / "out/rejects.jsonl")
    assert reject["line"] == 1 and "bytes" in reject["reason"]
