"""The band shuffle of a `FirstOfKeys` step across shards (see `steps/sharded.py`).

Each shard writes its records' keys into `buckets` files by key (`write_keys`): rows of
(key, position, order), position = part << 32 | record index, order = the key's place among
the record's keys. Each bucket is reduced apart (`shared_keys`: the rows of keys that more
than one record holds), and `decide` walks the records holding a shared key in stream order
with the same `FirstIndex` a single process uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from synthaug.steps.sharded import FirstIndex

SHIFT = 32  # position = part << SHIFT | index within the part


def write_keys(folder: Path, part: int, keys: list[list[int]], buckets: int) -> None:
    """Write the keys of a part's records (in order) to `buckets` files in `folder`."""
    rows: list[tuple[int, int, int]] = []
    for index, record_keys in enumerate(keys):
        position = part << SHIFT | index
        for order, key in enumerate(dict.fromkeys(record_keys)):  # each key once per record
            rows.append((key, position, order))
    table = np.array(rows, dtype=np.int64).reshape(-1, 3)
    which = np.mod(table[:, 0], buckets)
    for bucket in range(buckets):
        np.save(folder / f"keys-{bucket:03d}.npy", table[which == bucket])


def shared_keys(parts: Iterable[Path], bucket: int) -> Any:
    """The rows of one bucket, over all parts, whose key more than one record holds."""
    tables = [np.load(part / f"keys-{bucket:03d}.npy") for part in parts]
    table = np.concatenate(tables) if tables else np.empty((0, 3), dtype=np.int64)
    if not len(table):
        return table
    _, inverse, counts = np.unique(table[:, 0], return_inverse=True, return_counts=True)
    return table[counts[inverse] > 1]


def decide(rows: list[Any]) -> dict[int, int]:
    """{position of a dropped record: position of the kept record it duplicates}."""
    table = np.concatenate(rows) if rows else np.empty((0, 3), dtype=np.int64)
    if not len(table):
        return {}
    table = table[np.lexsort((table[:, 2], table[:, 1]))]  # by position, then key order
    positions, keys = table[:, 1].tolist(), table[:, 0].tolist()
    index: FirstIndex[int] = FirstIndex()
    dropped: dict[int, int] = {}
    start = 0
    for end in [*np.flatnonzero(np.diff(table[:, 1]) != 0).tolist(), len(positions) - 1]:
        position = positions[start]
        first = index.offer(position, keys[start:end + 1])
        if first is not None:
            dropped[position] = first
        start = end + 1
    return dropped
