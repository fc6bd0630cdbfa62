"""Records: plain JSON-serializable dicts; `_meta` holds provenance.

Ids are deterministic: a source record's id derives from its source and content,
a derived record's id from its parents' ids, the step that made it and its output index.
That is what makes resume exactly-once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

Record = dict[str, Any]
META = "_meta"
# bumped whenever id derivation changes, so a rerun never mixes ids of two schemes in one output
ID_SCHEME = 3
# keys a step sets anew on each record it makes; other `_meta` keys (annotations such as
# `pii`, `cluster`, `contamination`) travel on to derived records
_PROVENANCE = frozenset({"id", "parents", "step", "backend", "model", "prompt_sha", "seed",
                         "source", "recipe"})


def stable_hash(value: Any, length: int = 16) -> str:
    """Hex digest of a canonical JSON form of `value`."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def meta(record: Record) -> dict[str, Any]:
    """The provenance dict of a record (empty if none)."""
    value = record.get(META)
    return value if isinstance(value, dict) else {}


def record_id(record: Record) -> str:
    """The record's id; raises KeyError if it has none."""
    return str(meta(record)["id"])


def content(record: Record) -> Record:
    """The record without its provenance."""
    return {k: v for k, v in record.items() if k != META}


def source_record(fields: Record, *, source: str, index: int, recipe: str) -> Record:
    """A record read from input, with an id derived from its position and content.

    A record that already has provenance (synthaug output read again) keeps it: its id,
    parents and annotations, so lineage survives a second pipeline.
    """
    earlier = meta(fields)
    if earlier.get("id"):
        return {**content(fields), META: {**earlier, "source": f"{source}:{index + 1}"}}
    rid = stable_hash([index, content(fields)])  # not the path: moving a file keeps its ids
    return {**content(fields), META: {"id": rid, "parents": [], "recipe": recipe,
                                      "step": "input", "source": f"{source}:{index + 1}"}}


def derive(
    parents: Sequence[Record],
    fields: Record,
    *,
    step: str,
    index: int | str,
    **provenance: Any,
) -> Record:
    """A new record made by `step` from `parents`, its id derived deterministically."""
    parent_ids = [record_id(p) for p in parents]
    inherited = {k: v for k, v in meta(parents[0]).items() if k == "recipe"} if parents else {}
    notes = {k: v for k, v in meta(fields).items() if k not in _PROVENANCE}
    rid = stable_hash([parent_ids, step, index])
    new_meta = {**inherited, **notes, "id": rid, "parents": parent_ids, "step": step,
                **provenance}
    return {**content(fields), META: new_meta}


def dumps(record: Record) -> str:
    """One JSONL line (without newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def ids(records: Iterable[Record]) -> list[str]:
    """The ids of `records`, in order."""
    return [record_id(r) for r in records]
