"""Input files, JSONL or Parquet, read as records with the same checks and rejects.

A Parquet row (`.parquet`, `.pq`; extra `parquet`) is checked exactly as a JSONL line is: it
is turned into the JSON text of its row (dates and decimals as strings; a value JSON cannot
hold rejects the row), then required fields, their types and repeats (of the id field, of
`_meta.id`, of the whole row) are checked; a reject names the file, the row number (as
`line`, from 1) and the field. Both formats are read as *units*: (number, raw JSON bytes,
position after it), where the position is a byte offset in a JSONL file and a row index in
a Parquet file, so that a sharding executor cuts either into ranges the same way.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from synthaug.errors import InputError, MissingDependency
from synthaug.io import BOM, SeenRecords, SideRows, decode_record, reject_input
from synthaug.records import Record, source_record

log = logging.getLogger(__name__)
PARQUET = (".parquet", ".pq")
# (line or row number from 1, raw JSON bytes, position after, why the row has no JSON or "")
Unit = tuple[int, bytes, int, str]


def is_parquet(path: Path) -> bool:
    """Whether `path` is read as Parquet (by its suffix)."""
    return path.suffix.lower() in PARQUET


def units(path: Path, start: int = 0, stop: int | None = None, first_line: int = 1
          ) -> Iterator[Unit]:
    """The input's non-blank lines or rows from position `start` to `stop` (a JSONL range
    starts at line `first_line`; a Parquet row's number is its index + 1)."""
    if is_parquet(path):
        yield from _rows(path, start, stop)
        return
    with path.open("rb") as handle:
        handle.seek(start)
        number, offset = first_line, start
        while stop is None or offset < stop:
            raw = handle.readline()
            if not raw:
                return
            offset += len(raw)
            if raw.strip() and not (number == 1 and raw.strip() == BOM):
                yield number, raw, offset, ""
            number += 1


def _rows(path: Path, start: int, stop: int | None) -> Iterator[Unit]:
    """Rows [start, stop) of a Parquet file, reading only the row groups they touch."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependency("pyarrow", "Parquet input", "parquet") from None
    parquet = pq.ParquetFile(path)
    first = 0
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if first + size <= start:
            first += size
            continue
        if stop is not None and first >= stop:
            return
        for index, row in enumerate(parquet.read_row_group(group).to_pylist(), start=first):
            if index >= start and (stop is None or index < stop):
                try:
                    raw, problem = json.dumps(row, ensure_ascii=False, default=_plain), ""
                except (TypeError, ValueError) as exc:
                    raw, problem = repr(row), str(exc)
                yield index + 1, raw.encode("utf-8"), index + 1, problem
        first += size


def _plain(value: Any) -> Any:
    """Values JSON lacks, as strings (dates, times, decimals); others are refused."""
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta | decimal.Decimal):
        return str(value)
    raise TypeError(f"a {type(value).__name__} value cannot be held in JSON")


def read_input(path: Path, *, required: Mapping[str, tuple[type, ...]], recipe: str,
               side: SideRows, limit: int | None = None, id_field: str = "id"
               ) -> Iterator[Record]:
    """Records of a JSONL or Parquet file; a rejected line or row is logged, written to the
    rejects and skipped."""
    for unit, fields in checked_units(path, required=required, side=side, limit=limit,
                                      id_field=id_field):
        if fields is not None:
            yield source_record(fields, source=str(path), index=unit[0] - 1, recipe=recipe)


def checked_units(path: Path, *, required: Mapping[str, tuple[type, ...]], side: SideRows,
                  limit: int | None, id_field: str) -> Iterator[tuple[Unit, Record | None]]:
    """Every unit up to the `limit`-th accepted one, with its fields, or None once it was
    rejected (logged and written to `side`): the input policy, in one place."""
    seen = SeenRecords(id_field)
    count, empty = 0, True
    for unit in units(path):
        empty = False
        if limit is not None and count >= limit:
            return
        number, raw = unit[0], unit[1]
        try:
            fields = checked(unit, path, required)
            seen.check(fields, raw, str(path), number)
        except InputError as exc:
            reject_input(side, exc, raw, number)
            yield unit, None
            continue
        count += 1
        yield unit, fields
    if empty:
        warn_empty(path)


def warn_empty(path: Path) -> None:
    """The one warning for an input without any line or row."""
    log.warning("%s holds no input records: nothing to do", path)


def checked(unit: Unit, path: Path, required: Mapping[str, tuple[type, ...]]) -> Record:
    """One unit as a record, or an InputError naming file, line and field."""
    number, raw, _, problem = unit
    if problem:
        raise InputError(problem, file=str(path), line=number)
    return decode_record(raw, str(path), number, required)


def first_fields(path: Path, sample: int = 100) -> set[str] | None:
    """Fields seen in the first `sample` well-formed records (None if there are none)."""
    seen: set[str] = set()
    found = 0
    for _, raw, _, _ in units(path):
        try:
            value = json.loads(raw.decode("utf-8").lstrip("\ufeff"))
        except ValueError:
            continue
        if isinstance(value, dict):
            seen |= set(value)
            found += 1
            if found >= sample:
                break
    return seen if found else None


def count_units(path: Path | None, limit: int | None) -> int | None:
    """Non-blank lines or rows of the input (at most `limit`), for progress."""
    if path is None or not path.is_file():
        return None
    if is_parquet(path):
        import pyarrow.parquet as pq

        count = int(pq.ParquetFile(path).metadata.num_rows)
    else:
        with path.open("rb") as handle:
            count = sum(1 for line in handle if line.strip())
    return min(count, limit) if limit is not None else count
