"""The LLM client every step talks to: cache, in-flight limit, rate limits, retries, validation.

It wraps any `Backend`, so this logic exists once. One client per backend instance:
every step sharing a backend shares its in-flight limit. Between rounds of self-training a
client can `switch` to a new backend of the same kind (a newly trained model): stats, limits
and cache stay; the new backend's identity keys its own cache entries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from synthaug import budget
from synthaug.backends.base import AnyBackend, BackendOptions, Completion, Request
from synthaug.backends.cache import ResponseCache, cache_key, prompt_sha
from synthaug.backends.limits import ConcurrencyLimit, TokenBucket
from synthaug.errors import BackendError, ConfigError, FatalBackendError, RetryableError
from synthaug.telemetry import observer_for

log = logging.getLogger(__name__)
Validator = Callable[[str], object]


@dataclass
class ClientStats:
    """Counters of one client over a run."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    invalid_replies: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    limit: int = 0  # calls allowed at once now (adaptive: moves under the ceiling)
    limit_reason: str = "start"  # why it last changed (ramp, success, 429, latency, circuit...)
    limit_changes: int = 0


class LLMClient:
    """Answers requests through a backend, paying only for what the cache lacks."""

    def __init__(
        self,
        backend: AnyBackend,
        cache: ResponseCache | None = None,
        *,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        opts: BackendOptions = backend.options
        self.backend = backend
        self.cache = cache
        self.identity = backend.identity()
        self.concurrency = opts.concurrency
        self.max_retries = opts.max_retries
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.stats = ClientStats()
        self.limiter = ConcurrencyLimit(opts.concurrency, adaptive=opts.adaptive,
                                        max_outage=opts.max_outage,
                                        listener=self._limit_changed)
        self.stats.limit = self.limiter.limit
        self.observer = observer_for(self)
        self._rpm = TokenBucket(opts.requests_per_minute) if opts.requests_per_minute else None
        self._tpm = TokenBucket(opts.tokens_per_minute) if opts.tokens_per_minute else None

    async def complete(
        self, request: Request, validate: Validator | None = None
    ) -> list[Completion]:
        """`request.n` completions, from the cache where possible; raises BackendError."""
        keys = [cache_key(self.identity, request, i) for i in range(request.n)]
        found = [self.cache.get(k) if self.cache is not None else None for k in keys]
        missing = [i for i, c in enumerate(found) if c is None]
        self.stats.cache_hits += request.n - len(missing)
        charge = budget.current()
        if charge is not None and len(missing) < request.n:
            charge.cached(self.backend.model, [c for c in found if c is not None])
        if missing:
            try:
                fresh = await self._fetch(dataclasses.replace(request, n=len(missing)), validate)
            except budget.BudgetExhausted as exc:  # keep the valid replies paid before it
                self._keep(request, keys, missing, list(exc.partial))
                raise
            self._keep(request, keys, missing, fresh)
            for i, completion in zip(missing, fresh, strict=True):
                found[i] = completion
        return [c for c in found if c is not None]

    def _keep(self, request: Request, keys: list[str], missing: list[int],
              fresh: list[Completion]) -> None:
        """Cache `fresh` under the keys of the `missing` sample indexes, in order."""
        if self.cache is not None:
            sha = prompt_sha(request)
            for i, completion in zip(missing, fresh, strict=False):
                self.cache.put(keys[i], sha, completion)

    async def _fetch(self, request: Request, validate: Validator | None) -> list[Completion]:
        """Completions for `request`, retrying failures and replies that fail validation."""
        valid: list[Completion] = []
        last_error = "no attempt made"
        attempt = 0
        while attempt <= self.max_retries:
            wanted = request.n - len(valid)
            attempt_request = _reseeded(request, attempt, wanted)
            try:
                replies = await self._call(attempt_request)
            except FatalBackendError:
                self.stats.failures += 1
                raise
            except budget.BudgetExhausted as exc:
                exc.partial = tuple(valid)
                raise
            except RetryableError as exc:
                last_error = str(exc)
                if self.limiter.endpoint_down:
                    continue  # the breaker waits for the endpoint: no retry is used up
                await self._backoff(attempt, exc.retry_after)
                attempt += 1
                continue
            for reply in replies:
                reply.seed = attempt_request.seed
                problem = _check(reply, validate)
                if problem is None:
                    valid.append(reply)
                else:
                    self.stats.invalid_replies += 1
                    last_error = f"invalid reply ({problem}): {reply.text[:200]!r}"
            if len(valid) >= request.n:
                return valid[: request.n]
            await self._backoff(attempt, 0.0)
            attempt += 1
        self.stats.failures += 1
        raise BackendError(f"gave up after {self.max_retries + 1} attempts: {last_error}")

    async def _call(self, request: Request) -> list[Completion]:
        if self._rpm:
            await self._rpm.acquire(1)
        if self._tpm:
            await self._tpm.acquire(_token_estimate(request))
        async with self.limiter.slot():
            charge = budget.current()
            if charge is not None:
                charge.admit()  # no new call starts once the run's budget is spent
            self.stats.calls += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            try:
                replies = await self._generate(request)
            finally:
                self.stats.in_flight -= 1
        for reply in replies:
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
        if charge is not None:
            charge.paid(self.backend.model, replies)
        if len(replies) != request.n:
            raise RetryableError(f"asked for {request.n} completions, got {len(replies)}")
        return replies

    async def _generate(self, request: Request) -> list[Completion]:
        """The backend's answer, timed for the telemetry observer when one is enabled."""
        if self.observer is None:
            return await self.backend.generate(request)
        started = time.monotonic()
        try:
            replies = await self.backend.generate(request)
        except BackendError as exc:
            self.observer.call(self, request, time.monotonic() - started, [], exc)
            raise
        self.observer.call(self, request, time.monotonic() - started, replies, None)
        return replies

    def _limit_changed(self, limit: int, reason: str) -> None:
        self.stats.limit, self.stats.limit_reason = limit, reason
        self.stats.limit_changes += 1
        log.debug("%s: limit %d (%s)", self.backend.model, limit, reason)

    async def _backoff(self, attempt: int, retry_after: float | None) -> None:
        if attempt >= self.max_retries:
            return
        self.stats.retries += 1
        if retry_after is not None:
            delay = retry_after
        else:
            delay = min(self.backoff_cap, self.backoff_base * 2**attempt)
            delay *= 0.5 + random.random() / 2
        log.debug("retrying in %.2fs (attempt %d)", delay, attempt + 1)
        await asyncio.sleep(delay)

    async def switch(self, backend: AnyBackend) -> None:
        """Answer from `backend` from now on and close the old one.

        Waits until no call is in flight; the stats, limits and cache stay (the cache is keyed
        by backend identity, so the new model never gets the old model's answers).
        """
        async with self.limiter.drained():
            old, self.backend = self.backend, backend
            self.identity = backend.identity()
        if old is not backend:
            await old.close()

    def summary(self) -> dict[str, Any]:
        """Counters for the manifest (the backend's own, e.g. an endpoint pool's servers,
        included)."""
        return {**vars(self.stats), **self.backend.summary()}

    async def close(self) -> None:
        """Close the backend."""
        await self.backend.close()


def with_options(backend: AnyBackend, overrides: Mapping[str, Any]) -> AnyBackend:
    """A new backend of `backend`'s kind with `overrides` applied to its options (validated).

    Secrets are refused (pass keys through `api_key_env`): overrides are stored in the output
    folder so that a resumed run can apply them again.
    """
    secret = [k for k in overrides if "key" in k.lower() and not k.lower().endswith("_env")]
    if secret:
        raise ConfigError("a backend switch may not carry secrets; pass keys through "
                          "api_key_env", field=secret[0])
    cls = type(backend)
    try:
        options = cls.Options.model_validate({**backend.options.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise ConfigError(f"backend switch: {first['msg']}", field=where) from None
    return cls(options)


def _reseeded(request: Request, attempt: int, n: int) -> Request:
    """The request for a retry: same content, a different seed so a retry can differ."""
    seed = None if request.seed is None else request.seed + 7919 * attempt
    return dataclasses.replace(request, n=n, seed=seed)


def _check(reply: Completion, validate: Validator | None) -> str | None:
    if validate is None:
        return None
    try:
        validate(reply.text)
    except (ValueError, TypeError) as exc:
        return str(exc).splitlines()[0][:200]
    return None


def _token_estimate(request: Request) -> float:
    text = request.prompt or "".join(m.get("content", "") for m in request.messages or ())
    return len(text) / 4 + request.max_tokens * request.n
