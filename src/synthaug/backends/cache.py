"""A response cache in SQLite (WAL): a rerun pays only for what was not finished.

Keys hash the backend identity, the canonical request and the sample index; a value
keeps the seed that produced the completion, so a replay reports it too.
Secrets are never part of a key or value: backends leave them out of `identity()`.

Workers of a sharding executor each write their own file (`worker_cache`), reading through to
the run's main cache; the driver folds the worker files into the main one (`merge_caches`)
between segments and at the end, also the files of workers that were killed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from synthaug.backends.base import Completion, Request
from synthaug.records import stable_hash

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    prompt_sha TEXT NOT NULL,
    completion TEXT NOT NULL
)
"""


def prompt_sha(request: Request) -> str:
    """The hash of a request's content, recorded in provenance."""
    return stable_hash(request.canonical())


def cache_key(identity: dict[str, Any], request: Request, sample: int) -> str:
    """The cache key of sample number `sample` of `request` on a backend."""
    return stable_hash([identity, request.canonical(), sample], length=40)


class ResponseCache:
    """Completions stored by key; each insert is committed, so a kill loses nothing paid."""

    def __init__(self, path: Path, base: Path | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._base = base is not None and base.exists()
        if self._base:  # read through to it; never written
            self._db.execute("ATTACH DATABASE ? AS base", (str(base),))

    def get(self, key: str) -> Completion | None:
        """The stored completion for `key`, if any (here, else in the base cache)."""
        with self._lock:
            row = self._db.execute(
                "SELECT completion FROM responses WHERE key = ?", (key,)
            ).fetchone()
            if row is None and self._base:
                row = self._db.execute(
                    "SELECT completion FROM base.responses WHERE key = ?", (key,)
                ).fetchone()
        if row is None:
            return None
        completion = Completion(**json.loads(row[0]))
        completion.cached = True
        return completion

    def put(self, key: str, sha: str, completion: Completion) -> None:
        """Store a completion under `key`."""
        value = {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            **({"reasoning_tokens": completion.reasoning_tokens}
               if completion.reasoning_tokens else {}),
            "logprobs": completion.logprobs,
            "seed": completion.seed,
            **({"top_logprobs": completion.top_logprobs} if completion.top_logprobs else {}),
            **({} if completion.usage_known else {"usage_known": False}),
        }
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                (key, sha, json.dumps(value, ensure_ascii=False)),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def worker_cache(main: Path, name: str) -> ResponseCache:
    """A worker's own cache file beside `main` (MAIN.workers/NAME.sqlite), reading through."""
    return ResponseCache(main.with_name(main.name + ".workers") / f"{name}.sqlite", base=main)


def merge_caches(cache: ResponseCache) -> int:
    """Fold every worker file beside `cache` into it, then delete them; returns entries added."""
    folder = cache.path.with_name(cache.path.name + ".workers")
    added = 0
    for shard in sorted(folder.glob("*.sqlite")) if folder.is_dir() else []:
        with cache._lock:
            before = cache._db.total_changes
            try:
                cache._db.execute("ATTACH DATABASE ? AS shard", (str(shard),))
                try:
                    if cache._db.execute("SELECT 1 FROM shard.sqlite_master WHERE type = "
                                         "'table' AND name = 'responses'").fetchone():
                        cache._db.execute("INSERT OR IGNORE INTO responses "
                                          "SELECT * FROM shard.responses")
                finally:
                    cache._db.execute("DETACH DATABASE shard")
            except sqlite3.DatabaseError as exc:  # a worker killed while creating it
                log.warning("%s: not folded into the cache (%s)", shard, exc)
            added += cache._db.total_changes - before
        for suffix in ("", "-wal", "-shm"):
            Path(f"{shard}{suffix}").unlink(missing_ok=True)
    return added
