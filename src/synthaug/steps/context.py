"""What a running step sees: its stats, side files, seed and an LLM client (if it uses one)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from synthaug.backends.base import Completion, Request
from synthaug.backends.client import LLMClient, Validator
from synthaug.records import Record, content, meta, record_id, stable_hash


class SideFiles(Protocol):
    """Where rows that are not output go: rejects, failures, drops."""

    def write(self, kind: str, row: dict[str, Any]) -> None:
        """Append one row to the side file `kind`."""


@dataclass
class StepStats:
    """Counters of one step over a run."""

    label: str
    inputs: int = 0
    outputs: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    rejects: int = 0
    failures: int = 0
    calls: int = 0
    cache_hits: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    done: bool = False
    notes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "in": self.inputs, "out": self.outputs, "dropped": dict(self.dropped),
            "rejects": self.rejects, "failures": self.failures,
            "llm_samples": self.calls, "cache_hits": self.cache_hits,
            "seconds": round(self.seconds, 3), "notes": dict(self.notes),
        }


@dataclass
class StepContext:
    """Run-time services for one step."""

    label: str
    recipe: str
    seed: int
    stats: StepStats
    side: SideFiles
    llm: LLMClient | None = None
    clients: dict[str, LLMClient] = field(default_factory=dict)

    def drop(self, record: Record, reason: str, detail: str | None = None) -> None:
        """Record that `record` was filtered out: `reason` is counted, `detail` kept."""
        self.stats.dropped[reason] += 1
        self.side.write("dropped", {"step": self.label, "reason": reason, "detail": detail,
                                    "id": meta(record).get("id"), "record": record})

    def fail(self, record: Record, reason: str, raw: list[str] | None = None) -> None:
        """Record that `record` could not be processed (after retries), with the raw replies."""
        self.stats.failures += 1
        self.side.write("failures", {"step": self.label, "reason": reason,
                                     "id": meta(record).get("id"), "raw": raw,
                                     "record": record})

    def reject(self, record: Record, reason: str, field_name: str | None = None) -> None:
        """Record that `record` is malformed for this step (e.g. a field is missing)."""
        self.stats.rejects += 1
        source = str(meta(record).get("source", ""))
        file, _, line = source.rpartition(":")
        self.side.write("rejects", {
            "step": self.label, "file": file or None, "line": int(line) if line else None,
            "field": field_name, "reason": reason, "record": content(record),
        })

    def seed_for(self, record: Record | None, *salt: Any) -> int:
        """A deterministic per-record seed from the run seed, this step and the record."""
        rid = record_id(record) if record is not None else None
        return int(stable_hash([self.seed, self.label, rid, *salt], length=8), 16) % 2**31

    def client(self, role: str | None = None) -> LLMClient:
        """The client of backend `role` (default: the step's main backend)."""
        found = self.clients.get(role) if role else self.llm
        if found is None:
            raise RuntimeError(f"step {self.label} has no backend {role or ''}".strip())
        return found

    async def judge(self, prompt: str, role: str | None = None) -> bool:
        """A yes/no verdict from a judge model (greedy, 3 tokens); raises BackendError."""
        request = Request(messages=({"role": "user", "content": prompt},), max_tokens=3,
                          temperature=0.0, seed=0)
        reply = (await self.complete(request, role=role))[0].text
        return reply.strip().lower().startswith("yes")

    async def complete(
        self, request: Request, validate: Validator | None = None, role: str | None = None
    ) -> list[Completion]:
        """Completions for `request` through a backend of this step; raises BackendError."""
        replies = await self.client(role).complete(request, validate)
        self.stats.calls += len(replies)
        self.stats.cache_hits += sum(1 for r in replies if r.cached)
        return replies
