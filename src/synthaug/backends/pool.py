"""A model pool: several backends behind one role (`use: pool`).

    backends:
      policy:
        use: pool
        with:
          choose: each            # round-robin | weighted | each
          members:
            - {use: openai, name: big, with: {model: m1, base_url: ...}}
            - {use: openai, with: {model: m2, base_url: ...}, weight: 2}

`round-robin` sends each call to one member, picked from the call's seed (a rerun picks the
same member, so the cache answers it); `weighted` picks in proportion to `weight`; `each`
spreads a request's n samples over the members, so n = the pool size gets one answer from
every model. Every member keeps its own client (cache identity, in-flight limit, retries,
stats); each completion carries the name of the member that wrote it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synthaug import registry
from synthaug.backends.base import AnyBackend, Backend, BackendOptions, Completion, Request
from synthaug.backends.cache import ResponseCache
from synthaug.backends.client import ClientStats, LLMClient, Validator
from synthaug.errors import ConfigError
from synthaug.records import stable_hash


class PoolMember(BaseModel):
    """One backend of a pool: a registered backend name, its options, a name and a weight."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    use: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    name: str | None = None  # default: the member's model name
    weight: float = Field(1.0, gt=0)


class PoolOptions(BackendOptions):
    """A pool's members and how a call picks among them."""

    members: list[PoolMember] = Field(min_length=1)
    choose: Literal["round-robin", "weighted", "each"] = "round-robin"

    @model_validator(mode="after")
    def _distinct_names(self) -> PoolOptions:
        names = [m.name for m in self.members if m.name]
        if len(names) != len(set(names)):
            raise ValueError("member names must be distinct")
        return self


def _member(spec: PoolMember, index: int) -> AnyBackend:
    where = f"members.{index}"
    try:
        cls = registry.backend_class(spec.use)
    except ConfigError as exc:
        raise ConfigError(exc.message, field=f"{where}.use") from None
    if cls is PoolBackend:
        raise ConfigError("a pool cannot contain a pool", field=f"{where}.use")
    try:
        options = cls.Options(**spec.with_)
    except ValidationError as exc:
        first = exc.errors()[0]
        inner = ".".join(str(p) for p in first["loc"])
        raise ConfigError(str(first["msg"]), field=f"{where}.with.{inner}") from None
    return cls(options)


class PoolBackend(Backend[PoolOptions]):
    """Several backends answering for one role; see the module docstring."""

    name = "pool"
    Options: ClassVar[type[BackendOptions]] = PoolOptions

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        self.members = [_member(m, i) for i, m in enumerate(self.options.members)]
        self.names = [spec.name or backend.model
                      for spec, backend in zip(self.options.members, self.members, strict=True)]
        if len(set(self.names)) != len(self.names):
            raise ConfigError("two members answer under the same name; give them distinct "
                              "`name`s", field="members")

    @property
    def model(self) -> str:
        return self.options.model or "+".join(self.names)

    @property
    def chat_template(self) -> str | None:
        templates = {m.chat_template for m in self.members}
        return templates.pop() if len(templates) == 1 else None

    def supports(self, capability: str) -> bool:
        return all(m.supports(capability) for m in self.members)

    def identity(self) -> dict[str, Any]:
        weights = [m.weight for m in self.options.members]
        return {"backend": self.name, "choose": self.options.choose,
                "members": [{"name": n, **m.identity()} for n, m in zip(
                    self.names, self.members, strict=True)],
                **({"weights": weights} if self.options.choose == "weighted" else {})}

    def assign(self, request: Request) -> list[tuple[int, Request]]:
        """Which members answer `request`, each with its share of the n samples."""
        count = len(self.members)
        key = request.seed if request.seed is not None else stable_hash(request.canonical())
        draw = random.Random(f"pool:{key}")
        if self.options.choose == "weighted":
            weights = [m.weight for m in self.options.members]
            first = draw.choices(range(count), weights=weights)[0]
        else:
            first = draw.randrange(count)
        if self.options.choose != "each":
            return [(first, request)]
        order = [(first + i) % count for i in range(count)]
        shares = [request.n // count + (1 if i < request.n % count else 0) for i in range(count)]
        # each member its own seed, so two members serving the same model still differ
        return [(member, dataclasses.replace(request, n=share, seed=None if request.seed is None
                                             else request.seed + 104729 * member))
                for member, share in zip(order, shares, strict=True) if share]

    def label(self, member: int, completions: list[Completion]) -> list[Completion]:
        """`completions` marked with the member that wrote them."""
        for completion in completions:
            completion.model = self.names[member]
            completion.backend = self.members[member].name
        return completions

    async def generate(self, request: Request) -> list[Completion]:
        assigned = self.assign(request)
        parts = await _all(*(self.members[i].generate(sub) for i, sub in assigned))
        return [c for (i, _), part in zip(assigned, parts, strict=True)
                for c in self.label(i, part)]

    async def close(self) -> None:
        for member in self.members:
            await member.close()


class PoolClient:
    """The client of a pool role: one `LLMClient` per member, requests split by the pool."""

    def __init__(self, pool: PoolBackend, cache: ResponseCache | None = None) -> None:
        self.backend = pool
        self.members = [LLMClient(m, cache) for m in pool.members]
        for name, client in zip(pool.names, self.members, strict=True):
            # the member's name is part of its cache identity: two members serving the same
            # model under two names never share answers
            client.identity = {**client.identity, "member": name}
        self.concurrency = sum(c.concurrency for c in self.members)

    @property
    def identity(self) -> dict[str, Any]:
        """The pool's identity."""
        return self.backend.identity()

    @property
    def stats(self) -> ClientStats:
        """The members' counters summed (the limit reason: the members' distinct reasons)."""
        total = ClientStats()
        reasons: list[str] = []
        for client in self.members:
            for name, value in vars(client.stats).items():
                if isinstance(value, str):
                    reasons += [] if value in reasons else [value]
                else:
                    setattr(total, name, getattr(total, name) + value)
        total.limit_reason = ", ".join(reasons) or total.limit_reason
        return total

    def summary(self) -> dict[str, Any]:
        """Counters for the manifest: the sum, and each member's."""
        return {**vars(self.stats), "members": {
            name: c.summary() for name, c in zip(self.backend.names, self.members, strict=True)}}

    async def complete(self, request: Request, validate: Validator | None = None, *,
                       member: str | None = None) -> list[Completion]:
        """The completions of the members `request` is assigned to (or of the `member`
        named), each marked with its member; raises BackendError when a member gives up."""
        if member is None:
            assigned = self.backend.assign(request)
        elif member in self.backend.names:
            assigned = [(self.backend.names.index(member), request)]
        else:
            raise ConfigError(f"no pool member named '{member}'; members: "
                              f"{', '.join(self.backend.names)}", field="backend")
        parts = await _all(*(self.members[i].complete(sub, validate) for i, sub in assigned))
        return [c for (i, _), part in zip(assigned, parts, strict=True)
                for c in self.backend.label(i, part)]

    async def switch(self, backend: AnyBackend) -> None:
        """Pools are not switched between rounds (switch a single-model role instead)."""
        raise ConfigError("a pool role cannot be switched to a new model; give the model "
                          "being trained its own role", field="backend")

    async def close(self) -> None:
        """Close every member."""
        await self.backend.close()


async def _all(*work: Awaitable[list[Completion]]) -> list[list[Completion]]:
    """Every member's answers; the first error is raised once every call has ended."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


AnyClient = LLMClient | PoolClient


def make_client(backend: AnyBackend, cache: ResponseCache | None) -> AnyClient:
    """The client for a role's backend: a pool client for a pool, else an `LLMClient`."""
    if isinstance(backend, PoolBackend):
        return PoolClient(backend, cache)
    return LLMClient(backend, cache)


def member_names(client: AnyClient) -> list[str]:
    """The names of the models behind a client (one for a single backend)."""
    if isinstance(client, PoolClient):
        return list(client.backend.names)
    return [client.backend.model]
