"""An endpoint pool: one model served by several OpenAI-compatible servers (`use: endpoints`).

    backends:
      default:
        use: endpoints
        with:
          model: Qwen/Qwen2.5-7B-Instruct
          base_urls: [http://gpu1:8000/v1, http://gpu2:8000/v1, http://gpu3:8000/v1]
          concurrency: 192        # calls at once over the whole pool
          cooldown: 2             # first pause before a down server is checked again

Every server answers for the same model, so answers are interchangeable: the cache identity
is the backend kind and the model (and chat template), never the URLs, and adding or removing
a server keeps the cache. Each call goes to the healthy server with the fewest calls in flight
(ties in turn). A retryable failure (refused connection, 5xx, timeout, broken body) takes the
server out and the call goes on to another one within the same `generate`; a 429 only holds
the server back for its Retry-After. A server that is out gets a health check (GET /models)
once its cool-down has passed (doubling while it keeps failing, capped); it rejoins when the
check answers, and its cool-down resets once it answers a real call. When no server can take
a call, `generate` raises a RetryableError saying so, with the wait until the next check as
Retry-After: the client's retries and circuit breaker take over from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
from pydantic import Field, field_validator, model_validator

from synthaug.backends.base import Backend, BackendOptions, Completion, Request
from synthaug.backends.openai import OpenAIBackend, OpenAIOptions
from synthaug.errors import RetryableError

log = logging.getLogger(__name__)

_SINGLE_URL = OpenAIOptions.model_fields["base_url"].default


class EndpointsOptions(OpenAIOptions):
    """The OpenAI backend's options, shared by every server, plus the servers' URLs."""

    base_urls: list[str] = Field(min_length=1)
    cooldown: float = Field(2.0, gt=0)  # seconds before a down server's first health check
    max_cooldown: float = Field(60.0, gt=0)  # the longest pause between two checks

    @field_validator("base_url")
    @classmethod
    def _no_single_url(cls, value: str) -> str:
        if value != _SINGLE_URL:
            raise ValueError("an endpoint pool takes `base_urls` (a list), not `base_url`")
        return value

    @field_validator("base_urls")
    @classmethod
    def _distinct_urls(cls, urls: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, url in enumerate(urls):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base_urls[{i}] '{url}' is not an http(s) URL")
            key = url.rstrip("/")
            if key in seen:
                raise ValueError(f"base_urls[{i}] '{url}' is listed twice")
            seen.add(key)
        return urls

    @model_validator(mode="after")
    def _cooldown_order(self) -> EndpointsOptions:
        if self.max_cooldown < self.cooldown:
            raise ValueError("max_cooldown must be at least cooldown")
        return self


@dataclass(eq=False)
class Endpoint:
    """One server of the pool: its backend, its state and its counters."""

    url: str
    backend: OpenAIBackend
    state: str = "up"  # up | down | checking
    in_flight: int = 0
    max_in_flight: int = 0
    calls: int = 0
    failures: int = 0  # retryable failures that took it out (or kept it out)
    throttled: int = 0  # 429s: held back for the Retry-After, not taken out
    outages: int = 0  # times it was taken out
    checks: int = 0  # health checks sent
    strikes: int = 0  # outages since its last answered call: the cool-down doubles with each
    busy_until: float = 0.0  # a 429's Retry-After
    check_at: float = 0.0  # when a down server gets its next health check
    last_error: str = ""
    check: asyncio.Task[bool] | None = field(default=None, repr=False)

    def ready(self, now: float) -> bool:
        """Whether a call may go to it now."""
        return self.state == "up" and self.busy_until <= now

    def summary(self) -> dict[str, Any]:
        """Counters and state for the manifest."""
        return {"state": self.state, "calls": self.calls, "failures": self.failures,
                "throttled": self.throttled, "outages": self.outages, "checks": self.checks,
                "max_in_flight": self.max_in_flight, "last_error": self.last_error}


class EndpointsBackend(Backend[EndpointsOptions]):
    """One model behind several OpenAI-compatible servers; see the module docstring."""

    name = "endpoints"
    Options: ClassVar[type[BackendOptions]] = EndpointsOptions
    raw_completion = True
    json_schema = True
    logprobs = True

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        shared = self.options.model_dump(include=set(OpenAIOptions.model_fields) - {"base_url"})
        self.endpoints = [Endpoint(url, OpenAIBackend(OpenAIOptions(**shared, base_url=url)))
                          for url in self.options.base_urls]
        self._turn = 0  # where the search for the least busy server starts (ties in turn)

    def summary(self) -> dict[str, Any]:
        """Per-server counters, by URL (what the manifest shows under `endpoints`)."""
        return {"endpoints": {e.url: e.summary() for e in self.endpoints}}

    async def generate(self, request: Request) -> list[Completion]:
        """The completions from the least busy healthy server, trying each at most once."""
        tried: list[Endpoint] = []
        errors: list[str] = []
        while True:
            endpoint = await self._pick(tried)
            if endpoint is None:
                raise self._exhausted(errors)
            tried.append(endpoint)
            try:
                return await self._send(endpoint, request)
            except RetryableError as exc:
                errors.append(f"{endpoint.url}: {exc}")

    async def _send(self, endpoint: Endpoint, request: Request) -> list[Completion]:
        """`request` sent to `endpoint`; a retryable failure takes it out (a 429 holds it)."""
        endpoint.calls += 1
        endpoint.in_flight += 1
        endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
        try:
            replies = await endpoint.backend.generate(request)
        except RetryableError as exc:
            self._failed(endpoint, exc)
            raise
        finally:
            endpoint.in_flight -= 1
        endpoint.strikes = 0
        return replies

    async def _pick(self, tried: list[Endpoint]) -> Endpoint | None:
        """The ready server with the fewest calls in flight (not yet tried by this call);
        when none is ready, waits for the health checks that are due."""
        self._start_checks()
        ready = self._ready(tried)
        while not ready:  # the first server back answers; a hung check holds no one
            checks = [e.check for e in self.endpoints if e.check is not None]
            if not checks:
                break
            await asyncio.wait(checks, return_when=asyncio.FIRST_COMPLETED)
            ready = self._ready(tried)
        if not ready:
            return None
        self._turn += 1
        return min(ready, key=lambda e: e.in_flight)

    def _ready(self, tried: list[Endpoint]) -> list[Endpoint]:
        """The servers that may take a call now, listed from this call's turn on."""
        now, count = time.monotonic(), len(self.endpoints)
        order = [self.endpoints[(self._turn + i) % count] for i in range(count)]
        return [e for e in order if e.ready(now) and e not in tried]

    def _failed(self, endpoint: Endpoint, exc: RetryableError) -> None:
        now = time.monotonic()
        endpoint.last_error = str(exc)[:200]
        if str(exc).startswith("HTTP 429"):
            endpoint.throttled += 1
            pause = exc.retry_after if exc.retry_after is not None else self.options.cooldown
            endpoint.busy_until = max(endpoint.busy_until, now + pause)
            return
        endpoint.failures += 1
        if endpoint.state == "up":
            endpoint.state = "down"
            endpoint.outages += 1
            endpoint.strikes += 1
            endpoint.check_at = now + self._cooldown(endpoint.strikes)
            log.warning("endpoint %s taken out (%s); health check in %.1fs", endpoint.url,
                        endpoint.last_error, endpoint.check_at - now)

    def _cooldown(self, strikes: int) -> float:
        """The pause before a health check: `cooldown`, doubling per strike, capped."""
        opts = self.options
        return float(min(opts.max_cooldown, opts.cooldown * 2 ** max(0, strikes - 1)))

    def _start_checks(self) -> None:
        """A health check for every down server whose cool-down has passed."""
        now = time.monotonic()
        for endpoint in self.endpoints:
            if endpoint.state == "down" and endpoint.check_at <= now:
                endpoint.state = "checking"
                endpoint.check = asyncio.ensure_future(self._check(endpoint))

    async def _check(self, endpoint: Endpoint) -> bool:
        """GET /models: any HTTP answer below 500 (but 429) puts the server back."""
        endpoint.checks += 1
        status = 0
        try:
            status = await self._probe(endpoint)
        finally:
            endpoint.check = None
            if 0 < status < 500 and status != 429:
                endpoint.state = "up"
                log.warning("endpoint %s rejoins the pool", endpoint.url)
            else:
                endpoint.strikes += 1
                endpoint.state = "down"
                endpoint.check_at = time.monotonic() + self._cooldown(endpoint.strikes)
        return endpoint.state == "up"

    async def _probe(self, endpoint: Endpoint) -> int:
        """The HTTP status of GET /models on `endpoint` (0: no answer)."""
        timeout = aiohttp.ClientTimeout(total=self.options.connect_timeout)
        url = endpoint.url.rstrip("/") + "/models"
        try:
            # the server's own session: its headers (the API key) and its connection pool
            async with endpoint.backend._http().get(url, timeout=timeout) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            endpoint.last_error = f"health check: {type(exc).__name__}: {exc}"[:200]
            return 0
        if status >= 500 or status == 429:
            endpoint.last_error = f"health check: HTTP {status}"
        return status

    def _exhausted(self, errors: list[str]) -> RetryableError:
        """The error when no server can take a call: what failed, and when to come back."""
        now = time.monotonic()
        waits = [e.check_at - now if e.state == "down" else e.busy_until - now
                 for e in self.endpoints if e.state != "checking"]
        wait = max(0.0, min(waits, default=0.0))
        down = sum(1 for e in self.endpoints if e.state != "up")
        tail = f": {'; '.join(errors)}" if errors else ""
        return RetryableError(
            f"no endpoint of {len(self.endpoints)} can take the call ({down} down, "
            f"{len(self.endpoints) - down} held back by a 429; next health check or "
            f"Retry-After in {wait:.1f}s){tail}"[:600],
            retry_after=wait)

    async def close(self) -> None:
        for endpoint in self.endpoints:
            check, endpoint.check = endpoint.check, None
            if check is not None:
                check.cancel()
                with suppress(asyncio.CancelledError):
                    await check
            await endpoint.backend.close()
