"""Shards: the input cut into ranges of lines, step output committed per shard, atomically.

`scan_input` reads the input once, as the local executor does (rejects for malformed, missing
or repeated records), and cuts it into `InputShard`s of `shard_size` accepted records: byte
ranges that any worker can read with `read_shard`.

`PartStore` holds one segment's committed parts: OUT/shards/SEGMENT/part-NNNNN/ with
`records.jsonl` (the part's records in order), `ids.txt` (their ids), `side.jsonl` (its
rejects, failures and drops) and `done.json` (the fingerprint of what it was made from, its
step counters, usage and calls). A part is written in a temporary folder and renamed into
place, so it exists whole or not at all; a rerun reuses a part whose fingerprint matches and
that recorded no failure (failed records are tried again, as the local executor does).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synthaug.budget import Meter, Tally
from synthaug.inputs import checked, checked_units, units
from synthaug.io import SideRows
from synthaug.records import Record, dumps, meta, source_record, stable_hash
from synthaug.steps.context import StepStats


@dataclass(frozen=True)
class InputShard:
    """Lines (rows) from `first_line` at positions [start, end) of the input (bytes of a JSONL
    file, row indexes of a Parquet file); `skip`: the line numbers rejected."""

    index: int
    start: int
    end: int
    first_line: int
    skip: tuple[int, ...] = ()

    def fingerprint(self) -> str:
        """What identifies this shard's content (the input file is in the run identity)."""
        return stable_hash([self.start, self.end, self.first_line, list(self.skip)])


def scan_input(path: Path, *, required: Mapping[str, tuple[type, ...]], id_field: str,
               limit: int | None, shard_size: int, side: SideRows) -> list[InputShard]:
    """Check every input line or row (rejects go to `side`) and cut the accepted ones into
    shards (byte ranges of a JSONL file, row ranges of a Parquet file)."""
    shards: list[InputShard] = []
    start = end = in_shard = 0
    first_line, skip = 1, []
    for (number, _, end, _), fields in checked_units(path, required=required, side=side,
                                                     limit=limit, id_field=id_field):
        if fields is None:
            skip.append(number)
            continue
        in_shard += 1
        if in_shard == shard_size:
            shards.append(InputShard(len(shards), start, end, first_line, tuple(skip)))
            start, first_line, skip, in_shard = end, number + 1, [], 0
    if in_shard:
        shards.append(InputShard(len(shards), start, end, first_line, tuple(skip)))
    return shards


def read_shard(path: Path, shard: InputShard, recipe: str, name: str | None = None
               ) -> Iterator[Record]:
    """The records of one input shard (its lines were checked by `scan_input`); `name`: the
    input as the user gave it (records' `_meta.source`), if `path` is another spelling."""
    skip = set(shard.skip)
    for unit in units(path, shard.start, shard.end, shard.first_line):
        if unit[0] not in skip:
            fields = checked(unit, path, {})
            yield source_record(fields, source=name or str(path), index=unit[0] - 1,
                                recipe=recipe)


@dataclass
class PartWriter:
    """Writes one part in a temporary folder; `commit` renames it into place."""

    final: Path
    folder: Path
    counts: Counter[str] = field(default_factory=Counter)
    written: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True)
        self._records = (self.folder / "records.jsonl").open("w", encoding="utf-8")
        self._ids = (self.folder / "ids.txt").open("w", encoding="utf-8")
        self._side = (self.folder / "side.jsonl").open("w", encoding="utf-8")

    def write(self, kind: str, row: dict[str, Any]) -> None:
        """A side row (reject, failure, drop) of this part."""
        self._side.write(dumps({"kind": kind, "row": row}) + "\n")
        self.counts[kind] += 1

    def add(self, record: Record) -> None:
        """One output record of this part."""
        self._records.write(dumps(record) + "\n")
        self._ids.write(str(meta(record)["id"]) + "\n")
        self.written += 1

    def commit(self, done: dict[str, Any]) -> bool:
        """Make the part visible whole; False if another attempt committed it first."""
        for handle in (self._records, self._ids, self._side):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        done = {**done, "records": self.written, "side": dict(self.counts),
                "digest": stable_hash([done.get("fingerprint"), self.written, _size(self.folder)])}
        (self.folder / "done.json").write_text(json.dumps(done), encoding="utf-8")
        try:
            os.rename(self.folder, self.final)
        except OSError:  # a part already there (an earlier attempt that finished after all)
            shutil.rmtree(self.folder, ignore_errors=True)
            return False
        return True

    def abandon(self) -> None:
        """Remove the unfinished part."""
        for handle in (self._records, self._ids, self._side):
            handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def read_part(folder: Path) -> Iterator[Record]:
    """The records of the committed part in `folder`, in order."""
    with (folder / "records.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


class PartStore:
    """The committed parts of one segment of a run."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, index: int) -> Path:
        """Where part `index` lives once committed."""
        return self.root / f"part-{index:05d}"

    def done(self, index: int, fingerprint: str, *, retry_failed: bool = True
             ) -> dict[str, Any] | None:
        """The part's record if it is committed from the same input (and, with
        `retry_failed`, had no failures: those are tried again by a rerun)."""
        try:
            found: dict[str, Any] = json.loads((self.path(index) / "done.json").read_text())
        except (OSError, ValueError):
            return None
        if found.get("fingerprint") != fingerprint:
            return None
        if retry_failed and found.get("side", {}).get("failures"):
            return None
        return found

    def discard(self, index: int) -> None:
        """Remove a committed part (it is made again)."""
        shutil.rmtree(self.path(index), ignore_errors=True)

    def writer(self, index: int) -> PartWriter:
        """A writer for part `index`; an outdated committed part is removed first."""
        final = self.path(index)
        if final.exists():
            shutil.rmtree(final)
        return PartWriter(final, self.root / f"{final.name}.tmp-{uuid.uuid4().hex[:8]}")

    def records(self, index: int) -> Iterator[Record]:
        """The records of a committed part, in order."""
        return read_part(self.path(index))

    def ids(self, index: int) -> list[str]:
        """The record ids of a committed part, in order."""
        return (self.path(index) / "ids.txt").read_text(encoding="utf-8").split()

    def side_rows(self, index: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """The side rows of a committed part: (kind, row)."""
        with (self.path(index) / "side.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                yield row["kind"], row["row"]

    def clear_unfinished(self) -> None:
        """Remove temporary folders left by attempts that died."""
        if self.root.is_dir():
            for path in self.root.glob("part-*.tmp-*"):
                shutil.rmtree(path, ignore_errors=True)


def stats_data(stats: list[StepStats]) -> list[dict[str, Any]]:
    """Step counters as JSON (for a part's done.json)."""
    return [{"label": s.label, "inputs": s.inputs, "outputs": s.outputs,
             "dropped": dict(s.dropped), "rejects": s.rejects, "failures": s.failures,
             "calls": s.calls, "cache_hits": s.cache_hits, "seconds": s.seconds,
             "notes": dict(s.notes), "rounds": s.rounds} for s in stats]


def add_stats(into: dict[str, StepStats], data: list[dict[str, Any]]) -> None:
    """Add a part's step counters to the run's (matched by step label)."""
    for found in data:
        target = into[found["label"]]
        for name in ("inputs", "outputs", "rejects", "failures", "calls", "cache_hits",
                     "seconds"):
            setattr(target, name, getattr(target, name) + found[name])
        target.dropped.update(found["dropped"])
        target.notes.update(found["notes"])
        target.rounds.extend(found["rounds"])
        target.done = True


def usage_data(meter: Meter) -> dict[str, dict[str, dict[str, int]]]:
    """A meter's tallies by step and model, as JSON."""
    return {step: {model: asdict(t) for model, t in by.items()}
            for step, by in meter.steps.items()}


def add_usage(meter: Meter, data: dict[str, dict[str, dict[str, int]]]) -> None:
    """Add a worker's tallies to the run's meter."""
    for step, by in data.items():
        for model, counts in by.items():
            meter.tally(step, model).add(Tally(**counts))
