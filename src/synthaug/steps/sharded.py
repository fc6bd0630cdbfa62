"""How a global step runs across shards without seeing every record in one place.

A sharding executor (`executors/ray_executor.py`) runs a global step once over every shard's
records, in order, on the driver ("gather"), unless the step offers a cheaper combine rule:

`FirstOfKeys`: the step keeps the first record, in stream order, of each group of records
that share a key (exact dedup: one content hash; MinHash: one key per LSH band), and drops the
later ones. Shards compute their records' keys in parallel, a shuffle by key finds the keys
held by more than one record, one pass in stream order over just those records decides who is
dropped (`FirstIndex`), and each shard then settles its own records. The result is the one the
step gives over the whole stream in one process, because both use `FirstIndex`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from synthaug.records import Record
from synthaug.steps.context import StepContext

Label = TypeVar("Label", bound=Hashable)


@runtime_checkable
class FirstOfKeys(Protocol):
    """A global step that keeps the first record of each group sharing a key."""

    def record_keys(self, records: list[Record]) -> list[list[int]]:
        """Each record's keys (signed 64-bit integers), in the order they are matched."""

    def settle(self, record: Record, first: str | None, ctx: StepContext) -> Record | None:
        """The kept record (first is None) or None after dropping it as a copy of `first`."""


class FirstIndex(dict[int, Label]):
    """Keys of the records kept so far, each mapped to its record's label (id or position)."""

    def offer(self, label: Label, keys: Sequence[int]) -> Label | None:
        """The kept record an incoming one duplicates (the first of its keys that a kept record
        holds), or None: then it is kept and holds all its keys."""
        get = self.get
        for key in keys:
            found = get(key)
            if found is not None:
                return found
        self.update(dict.fromkeys(keys, label))
        return None
