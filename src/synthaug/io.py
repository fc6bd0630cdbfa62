"""Reading input (bad lines go to rejects) and writing output (appended, resumable).

Input policy, line by line: a UTF-8 byte-order mark at the start of the file and CRLF line
ends are accepted; a line that is not UTF-8, not JSON or not an object, or whose record lacks
a field a step needs or holds it with another type, is rejected (rejects.jsonl: file, line,
field, reason, the raw line); a record repeating an earlier record's id (field `id`, or
`_meta.id` of synthaug output) or an earlier line exactly is rejected as "duplicate of line
N": the first wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from synthaug.errors import ConfigError, InputError, MissingDependency, WrongType
from synthaug.records import META, Record, dumps, meta

log = logging.getLogger(__name__)
SIDE_KINDS = ("rejects", "failures", "dropped")
BOM = b"\xef\xbb\xbf"
CORRUPT = "records.corrupt.jsonl"
# what a run writes in its output folder (the cache is kept on --overwrite: its keys hold
# the backend identity, so another model never reads the old answers)
OUTPUT_FILES = ("records.jsonl", CORRUPT, "manifest.json", "records.parquet",
                "records.sft.jsonl", "records.alpaca.jsonl", "records.prm.jsonl",
                "records.dpo.jsonl", "records.kto.jsonl", "records.rm.jsonl",
                *(f"{kind}.jsonl" for kind in SIDE_KINDS))
# format -> (package, feature, extra) of the optional dependency it needs, if any
FORMATS: dict[str, tuple[str, str, str] | None] = {
    "jsonl": None, "parquet": ("pyarrow", "Parquet output", "parquet"),
    "hf": ("datasets", "Hugging Face output", "hf"), "sft": None, "alpaca": None, "prm": None,
    "dpo": None, "kto": None, "rm": None}
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               list: "a list", dict: "an object", type(None): "null"}

Requirements = Mapping[str, tuple[type, ...]]


def decode_line(raw: bytes, *, first: bool = False) -> str:
    """The text of one input line: UTF-8, without a leading BOM (first line) or line end."""
    if first and raw.startswith(BOM):
        raw = raw[len(BOM):]
    return raw.decode("utf-8").rstrip("\r\n")


class SideRows(Protocol):
    """Where rejects, failures and drops go (`SideWriter`, a shard's part writer)."""

    def write(self, kind: str, row: dict[str, Any]) -> None:
        """Append one row to the side file `kind`."""


def reject_input(side: SideRows, exc: InputError, raw: bytes, number: int) -> None:
    """Log an unusable input line and write it to the rejects with its reason."""
    log.warning("%s", exc)
    if number == 1 and raw.startswith(BOM):
        raw = raw[len(BOM):]
    side.write("rejects", {"step": "input", "file": exc.file, "line": number,
                           "field": exc.field, "reason": exc.reason,
                           "raw": raw.decode("utf-8", "replace").rstrip("\r\n")})


def decode_record(raw: bytes, file: str, line: int, required: Requirements) -> Record:
    """One input line as a record, or a RecordError naming file, line and field."""
    try:
        text = decode_line(raw, first=line == 1)
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 at byte {exc.start}", file=file, line=line) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})",
                         file=file, line=line) from None
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}",
                         file=file, line=line)
    for name in sorted(required):
        if name not in value:
            raise InputError("missing required field", file=file, line=line, field=name)
        if not _holds(value[name], required[name]):
            reason = WrongType(name, type_words(required[name]), value[name]).reason
            raise InputError(reason, file=file, line=line, field=name)
    if not isinstance(value.get(META, {}), dict):
        value.pop(META)
    return value


def _holds(value: Any, kinds: tuple[type, ...]) -> bool:
    """isinstance, except that a boolean is no number and an integer is a number."""
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def type_words(kinds: tuple[type, ...]) -> str:
    """'a string', 'a string or a list', ... for an error message."""
    return " or ".join(_TYPE_WORDS.get(kind, kind.__name__) for kind in kinds)


class SeenRecords:
    """The first line of each record id and of each exact line (16-byte digests)."""

    def __init__(self, id_field: str) -> None:
        self.id_field = id_field
        self.first: dict[bytes, int] = {}

    def check(self, fields: Record, raw: bytes, file: str, line: int) -> None:
        """Raise InputError if `fields` repeats an earlier record (the first wins)."""
        keys = [b"L" + _digest(raw.rstrip(b"\r\n").removeprefix(BOM))]
        for kind, value in ((b"I", fields.get(self.id_field)), (b"M", meta(fields).get("id"))):
            if value is not None:
                keys.append(kind + _digest(json.dumps(value, sort_keys=True).encode()))
        for key in keys:
            if key in self.first:
                raise InputError(f"duplicate of line {self.first[key]}", file=file, line=line)
        for key in keys:
            self.first[key] = line


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


async def aiter_records(records: Iterator[Record]) -> AsyncIterator[Record]:
    """An async stream over a sync iterator of records."""
    for record in records:
        yield record


class SideWriter:
    """Appends rows to rejects.jsonl, failures.jsonl and dropped.jsonl (emptied at run start)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts = dict.fromkeys(SIDE_KINDS, 0)
        self._handles: dict[str, Any] = {}
        for kind in SIDE_KINDS:
            (folder / f"{kind}.jsonl").unlink(missing_ok=True)

    def write(self, kind: str, row: dict[str, Any]) -> None:
        """Append one row to the `kind` file."""
        if kind not in self._handles:
            self._handles[kind] = (self.folder / f"{kind}.jsonl").open("a", encoding="utf-8")
        self._handles[kind].write(dumps(row) + "\n")
        self._handles[kind].flush()
        self.counts[kind] += 1

    def close(self) -> None:
        """Close every file."""
        for handle in self._handles.values():
            handle.close()


class RecordWriter:
    """Appends records to a JSONL file, each id at most once, surviving a kill at any point.

    Ids are unique within a run by construction, so only the ids of an earlier, interrupted
    run are held in memory: a fresh run's memory does not grow with its output.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: set[str] = set()
        self.resumed = 0
        if path.exists():
            self._recover()
            self.resumed = len(self.seen)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _recover(self) -> None:
        """Read the ids already written; set corrupt lines aside; cut a partial last line."""
        corrupt: dict[int, str] = {}
        partial: tuple[int, int] | None = None
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.endswith(b"\n"):
                    partial = (number, len(raw))
                    break
                rid = _written_id(raw)
                if rid is None:
                    corrupt[number] = raw.decode("utf-8", "replace").rstrip("\r\n")
                else:
                    self.seen.add(rid)
        if corrupt:
            self._set_aside(corrupt)
        elif partial:
            with self.path.open("rb+") as handle:
                handle.truncate(self.path.stat().st_size - partial[1])
        if partial:
            log.warning("%s: cut a partial last line (line %d, %d bytes) left by an "
                        "interrupted write; its record is made again", self.path, *partial)

    def _set_aside(self, corrupt: dict[int, str]) -> None:
        """Move corrupt lines to records.corrupt.jsonl; rewrite the file without them."""
        aside = self.path.with_name(CORRUPT)
        with aside.open("a", encoding="utf-8") as out:
            for number, text in corrupt.items():
                out.write(dumps({"line": number, "raw": text}) + "\n")
        tmp = self.path.with_name(self.path.name + ".tmp")
        with self.path.open("rb") as src, tmp.open("wb") as dst:
            for number, raw in enumerate(src, start=1):
                if raw.endswith(b"\n") and number not in corrupt:
                    dst.write(raw)
            dst.flush()
            os.fsync(dst.fileno())
        tmp.replace(self.path)
        shown = ", ".join(str(n) for n in list(corrupt)[:10]) + (", ..." if len(corrupt) > 10
                                                                 else "")
        log.warning("%s: %d corrupt line(s) (line %s) moved to %s; the %d valid records are "
                    "kept, the lost ones are made again", self.path, len(corrupt), shown,
                    aside.name, len(self.seen))

    def write(self, record: Record) -> bool:
        """Append `record` unless its id was written before; True if written."""
        rid = str(meta(record)["id"])
        if rid in self.seen:
            return False
        os.write(self._fd, (dumps(record) + "\n").encode("utf-8"))
        return True

    def copy_lines(self, source: Path, ids: list[str]) -> int:
        """Append the JSONL lines of `source` (whose record ids are `ids`, in order), each
        unless its id was written before; returns how many were written."""
        with source.open("rb") as handle:
            if self.seen.isdisjoint(ids):  # the common case: bytes copied as they are
                while chunk := handle.read(1 << 20):
                    _write_all(self._fd, chunk)
                return len(ids)
            written = 0
            for rid, line in zip(ids, handle, strict=True):
                if rid not in self.seen:
                    _write_all(self._fd, line)
                    written += 1
            return written

    def close(self) -> None:
        """Close the file (again: nothing)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _written_id(raw: bytes) -> str | None:
    """The id of a well-formed output line, or None if the line is corrupt."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    rid = meta(value).get("id") if isinstance(value, dict) else None
    return str(rid) if rid else None


def records_file(dataset: Path) -> Path:
    """The records of a dataset given as a JSONL file or a synthaug output folder."""
    path = dataset / "records.jsonl" if dataset.is_dir() else dataset
    if not path.is_file():
        raise ConfigError("dataset not found (a JSONL file or a synthaug output folder)",
                          file=str(path))
    return path


def data_file(name: str) -> Path:
    """A data file shipped with synthaug (synthaug/data/NAME)."""
    from importlib import resources

    path = Path(str(resources.files("synthaug.data").joinpath(name)))
    if not path.is_file():
        raise ConfigError(f"no file {name!r}: neither a path nor a data file shipped in "
                          "synthaug/data")
    return path


def load_jsonl(path: Path) -> list[Record]:
    """Every record of a JSONL file (small files and exports); a bad line is an InputError."""
    if not path.is_file():
        raise ConfigError("file not found", file=str(path))
    rows: list[Record] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                rows.append(json.loads(decode_line(raw, first=number == 1)))
            except ValueError as exc:
                raise InputError(f"not a JSON line ({str(exc).splitlines()[0]})",
                                 file=str(path), line=number) from None
    return rows


def check_format(fmt: str) -> None:
    """Fail if `fmt` is no output format, or its package is not installed (before a run)."""
    import importlib.util

    if fmt not in FORMATS:
        raise ConfigError(f"unknown output format {fmt!r}; valid: {', '.join(FORMATS)}",
                          field="format")
    needs = FORMATS[fmt]
    if needs and importlib.util.find_spec(needs[0]) is None:
        raise MissingDependency(*needs)


def export(records_path: Path, fmt: str) -> Path:
    """Write the records in `fmt` beside the JSONL; return the path."""
    check_format(fmt)
    if fmt == "jsonl":
        return records_path
    rows = load_jsonl(records_path)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = records_path.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist(rows), target)
        return target
    if fmt == "hf":
        import datasets

        target = records_path.parent / "hf"
        datasets.Dataset.from_list(rows).save_to_disk(str(target))
        return target
    from synthaug import shapes

    target = records_path.with_name(f"records.{fmt}.jsonl")
    convert: Callable[[Record], Any] = getattr(shapes, f"to_{fmt}")
    with target.open("w", encoding="utf-8") as handle:
        for row in rows:
            shaped = convert(row)
            for item in [shaped] if isinstance(shaped, dict) else shaped or ():
                handle.write(dumps(item) + "\n")
    return target
