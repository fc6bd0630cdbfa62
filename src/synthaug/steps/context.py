"""What a running step sees: its stats, side files, a seeded RNG and the model service.

Every step family reaches models the same way: `await ctx.generate(prompt, sampling,
seed=...)` returns a `Reply` carrying its provenance, `ctx.derive(parents, fields, index,
*replies)` stamps that provenance on a new record, and `await ctx.attempt(work, item)` is the
one failure policy (a failed call or unusable reply becomes a failure row with its input and
reason; a record unfit for the step becomes a reject).

Steps that run in rounds keep per-round facts with `ctx.note_round(i, **facts)` (the manifest
shows them under the step's `rounds`), files per round under `ctx.round_file(i, suffix)`
(OUT/rounds/STEP/), and may point a role at a new model with `await ctx.switch_backend(...)`.
"""

from __future__ import annotations

import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from synthaug import budget
from synthaug.backends.cache import prompt_sha
from synthaug.backends.client import with_options
from synthaug.backends.pool import AnyClient, PoolClient, member_names
from synthaug.errors import BackendError, ConfigError, ParseError, RecordError
from synthaug.records import Record, content, derive, meta, record_id, stable_hash
from synthaug.steps.llm import Prompt, Reply, Sampling, make_request, provenance

T = TypeVar("T")
Validator = Callable[[str], object]


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
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per-round facts, in order

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary (with `rounds` for a step that ran in rounds)."""
        found = {
            "in": self.inputs, "out": self.outputs, "dropped": dict(self.dropped),
            "rejects": self.rejects, "failures": self.failures,
            "llm_samples": self.calls, "cache_hits": self.cache_hits,
            "seconds": round(self.seconds, 3), "notes": dict(self.notes),
        }
        if self.rounds:
            found["rounds"] = [dict(entry) for entry in self.rounds]
        return found

    def note_round(self, index: int, **facts: Any) -> dict[str, Any]:
        """Merge `facts` into round `index`'s entry (created on first use); returns it."""
        for entry in self.rounds:
            if entry["round"] == index:
                entry.update(facts)
                return entry
        entry = {"round": index, **facts}
        self.rounds.append(entry)
        return entry


@dataclass
class StepContext:
    """Run-time services for one step; `clients` holds only the roles the step declared."""

    label: str
    recipe: str
    seed: int
    stats: StepStats
    side: SideFiles
    clients: dict[str, AnyClient] = field(default_factory=dict)
    main_role: str | None = None
    out_dir: Path | None = None  # the run's output folder (None: a scratch folder on demand)

    # -- side files ---------------------------------------------------------------------
    def drop(self, record: Record, reason: str, detail: str | None = None) -> None:
        """Record that `record` was filtered out: `reason` is counted, `detail` kept."""
        self.stats.dropped[reason] += 1
        self.side.write("dropped", {"step": self.label, "reason": reason, "detail": detail,
                                    "id": meta(record).get("id"), "record": record})

    def fail(self, item: Record, reason: str, raw: list[str] | None = None) -> None:
        """Record that `item` (a record, or a description of the work) could not be done."""
        self.stats.failures += 1
        self.side.write("failures", {"step": self.label, "reason": reason,
                                     "id": meta(item).get("id"), "raw": raw, "record": item})

    def reject(self, record: Record, reason: str, field_name: str | None = None) -> None:
        """Record that `record` is malformed for this step (a field is missing or mistyped)."""
        self.stats.rejects += 1
        source = str(meta(record).get("source", ""))
        file, _, line = source.rpartition(":")
        self.side.write("rejects", {
            "step": self.label, "file": file or None,
            "line": int(line) if line.isdigit() else None, "field": field_name,
            "reason": reason, "id": meta(record).get("id"), "record": content(record),
        })

    async def attempt(self, work: Awaitable[T], item: Record) -> T | None:
        """`await work`, or None after recording why it failed (the one failure policy)."""
        try:
            return await work
        except RecordError as exc:
            self.reject(item, exc.reason, exc.field)
        except ParseError as exc:
            self.fail(item, f"parse error: {exc}", raw=exc.raw)
        except BackendError as exc:
            self.fail(item, str(exc))
        except budget.BudgetExhausted:
            # not a failure: the item is left for a rerun with a larger budget
            self.stats.notes["left undone: budget spent"] += 1
        return None

    # -- rounds -------------------------------------------------------------------------
    def note_round(self, index: int, **facts: Any) -> None:
        """Record facts about round `index` (kept records, threshold, model...): the manifest
        lists them under the step's `rounds`."""
        self.stats.note_round(index, **facts)

    def round_file(self, index: int, suffix: str) -> Path:
        """OUT/rounds/STEP/round-INDEX{suffix} (its folder created): a round's own files."""
        if self.out_dir is None:
            self.out_dir = Path(tempfile.mkdtemp(prefix="synthaug-rounds-"))
        folder = self.out_dir / "rounds" / re.sub(r"[^A-Za-z0-9._-]", "_", self.label)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"round-{index}{suffix}"

    # -- randomness -----------------------------------------------------------------------
    def seed_for(self, key: Record | None, *salt: Any) -> int:
        """A seed from the run seed, this step, the record's id (if any) and `salt`."""
        rid = record_id(key) if key is not None and meta(key).get("id") else None
        return int(stable_hash([self.seed, self.label, rid, *salt], length=8), 16) % 2**31

    def rng(self, key: Record | None, *salt: Any) -> random.Random:
        """A random generator for one choice: `--seed` changes it, a rerun repeats it."""
        return random.Random(self.seed_for(key, *salt))

    # -- the model service ----------------------------------------------------------------
    def client(self, role: str | None = None) -> AnyClient:
        """The client of a declared role (default: the step's main role)."""
        name = role or self.main_role
        found = self.clients.get(name) if name else None
        if found is None:
            raise ConfigError(f"calls backend role '{name}' it did not declare in uses()",
                              step=self.label, field="backend")
        return found

    def model(self, role: str | None = None) -> str | None:
        """The model name the role answers with now (None if the step calls no model)."""
        name = role or self.main_role
        found = self.clients.get(name) if name else None
        return found.backend.model if found is not None else None

    async def switch_backend(self, role: str | None, overrides: Mapping[str, Any]) -> str:
        """Point `role` (default: the main one) at a backend of the same kind with `overrides`
        applied to its options, e.g. {"model": ..., "base_url": ...} for a model trained
        between rounds; returns the new model name. The old backend is closed; the cache stays
        (the new backend's identity keys its answers). Raises ConfigError for bad options."""
        name = role or self.main_role
        client = self.client(name)
        try:
            backend = with_options(client.backend, overrides)
        except ConfigError as exc:
            raise ConfigError(exc.message, step=self.label,
                              field=f"backend {name}: {exc.field}" if exc.field else None
                              ) from None
        await client.switch(backend)
        return backend.model

    def members(self, role: str | None = None) -> list[str]:
        """The names of the models behind the role: several for a pool (`use: pool`), so
        `n=len(members)` with `choose: each` gets one answer from every model."""
        return member_names(self.client(role))

    def capacity(self, role: str | None = None) -> int:
        """How many requests the role's backend takes at once."""
        return self.client(role).concurrency

    def chat_template(self, role: str | None = None) -> str | None:
        """The chat template of the role's model, when its backend knows it."""
        return self.client(role).backend.chat_template

    async def generate(
        self,
        prompt: Prompt,
        sampling: Sampling,
        *,
        seed: int,
        role: str | None = None,
        n: int = 1,
        schema: dict[str, Any] | None = None,
        validate: Validator | None = None,
        logprobs: bool = False,
        member: str | None = None,
        top_logprobs: int = 0,
    ) -> Reply:
        """`n` completions of `prompt` with their provenance; raises BackendError. `member`
        asks one named model of a pool role (see `members`)."""
        client = self.client(role)
        request = make_request(prompt, sampling, seed=seed, n=n, schema=schema,
                               logprobs=logprobs, top_logprobs=top_logprobs)
        if isinstance(client, PoolClient):
            completions = await client.complete(request, validate, member=member)
        elif member in (None, client.backend.model):
            completions = await client.complete(request, validate)
        else:
            raise ConfigError(f"asks for model '{member}' but role '{role or self.main_role}' "
                              f"has only '{client.backend.model}'", step=self.label,
                              field="backend")
        self.stats.calls += len(completions)
        self.stats.cache_hits += sum(1 for c in completions if c.cached)
        charge = budget.current()
        if charge is not None:
            charge.answered(request, completions)  # kept only by a preview's trace
        answered = {(c.backend, c.model) for c in completions if c.model}
        backend, model = answered.pop() if len(answered) == 1 else \
            (client.backend.name, client.backend.model)
        return Reply(tuple(completions), role or self.main_role or "", backend or "", model,
                     prompt_sha(request))

    def derive(self, parents: list[Record], fields: Record, index: int | str,
               *replies: Reply) -> Record:
        """A new record made by this step, with the provenance of the calls that made it."""
        made = derive(parents, fields, step=self.label, index=index, **provenance(replies))
        made["_meta"].setdefault("recipe", self.recipe)
        return made
