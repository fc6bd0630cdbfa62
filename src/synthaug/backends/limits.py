"""Async token buckets for requests-per-minute and tokens-per-minute limits, and the
concurrency limit of a client: static or adaptive (AIMD), behind a circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from synthaug.errors import BackendError, FatalBackendError, RetryableError


class TokenBucket:
    """Allows `per_minute` units a minute, with bursts up to one minute's worth."""

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ValueError("a rate limit must be positive")
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until `amount` units are available, then take them."""
        amount = min(amount, self.capacity)
        async with self._lock:
            self._refill()
            while self.level < amount:
                await asyncio.sleep((amount - self.level) / self.rate)
                self._refill()
            self.level -= amount


# --- adaptive concurrency -------------------------------------------------------------------

START = 4  # an adaptive limit starts at an eighth of the ceiling, at least this, and ramps
BACKOFF = 0.9  # multiplicative decrease on overload
LATENCY_RISE = 2.0  # recent latency this many times the baseline counts as overload...
LATENCY_MARGIN = 0.1  # ...when also this many seconds above it
RAMP_END = (1.5, 0.05)  # a smaller rise (times, seconds) ends the ramp, without a cut
TRIP_FAILURES = 5  # the breaker opens after this many failures in a row...
TRIP_SECONDS = 1.0  # ...with no success for this long
COOLDOWN = (0.5, 5.0)  # first and longest pause before a probe; doubles while probes fail

Listener = Callable[[int, str], None]


@dataclass
class Ticket:
    """One call holding a slot: its order, its start time, whether it probes the breaker."""

    seq: int
    started: float
    probe: bool
    in_flight: int  # calls in flight, this one included, when it was sent


class Latency:
    """A recent latency (EWMA over ~10 calls) against a baseline that follows it down at once
    and up slowly (over ~50 round trips of `limit` calls); `above()` compares the two."""

    def __init__(self) -> None:
        self.recent: float | None = None
        self.baseline: float | None = None
        self.samples = 0

    def add(self, seconds: float, limit: int) -> None:
        """Fold in one call's latency, `limit` calls being allowed at once."""
        self.samples += 1
        self.recent = seconds if self.recent is None else self.recent + 0.1 * (
            seconds - self.recent)
        base = self.recent if self.baseline is None else self.baseline
        self.baseline = min(self.recent, base + 0.02 / limit * (self.recent - base))

    def above(self, times: float, margin: float) -> bool:
        """Whether recent latency is over `times` the baseline and `margin` seconds above."""
        if self.samples < 20 or self.recent is None or self.baseline is None:
            return False
        return self.recent > times * self.baseline and self.recent - self.baseline > margin


class Breaker:
    """A circuit breaker: closed; open (calls wait) after failures in a row with no success;
    then one probe call; closed again when it succeeds, open longer when it fails. Once the
    endpoint has been down `max_outage` seconds, waiting calls fail instead and failures use
    retries again; a probe still goes once per cooldown, so its return is noticed."""

    def __init__(self, max_outage: float) -> None:
        self.max_outage = max_outage
        self.state = "closed"  # closed | open | probing
        self.failures = 0
        self.last_success = time.monotonic()
        self.down_since = 0.0
        self.reopen_at = 0.0
        self.opens = 0  # consecutive openings, for the cooldown

    def waiting(self, now: float) -> bool:
        """Whether calls wait for the endpoint (open or probing, and not down too long)."""
        return self.state != "closed" and now - self.down_since <= self.max_outage

    def wait(self, now: float) -> float | None:
        """None when a call may go now; else seconds to wait (raises once down too long)."""
        if self.state == "closed":
            return None
        if self.state == "open" and now >= self.reopen_at:
            return None
        if now - self.down_since > self.max_outage:
            raise FatalBackendError(f"endpoint unavailable for {now - self.down_since:.0f}s "
                               f"(circuit open; max_outage is {self.max_outage:g}s)")
        until = self.reopen_at if self.state == "open" else self.down_since + self.max_outage
        return max(0.01, until - now)

    def enter(self) -> bool:
        """A call goes; True when it is the probe of an open breaker."""
        if self.state == "open":
            self.state = "probing"
            return True
        return False

    def success(self, now: float) -> bool:
        """An answer came back; True when this closed the breaker."""
        self.failures, self.last_success = 0, now
        reopened = self.state != "closed"
        self.state, self.opens = "closed", 0
        return reopened

    def failure(self, now: float, retry_after: float | None, probe: bool) -> bool:
        """A call failed; True when this opened the breaker."""
        self.failures += 1
        tripped = (self.state == "closed" and self.failures >= TRIP_FAILURES
                   and now - self.last_success >= TRIP_SECONDS)
        if not (tripped or probe):
            return False
        if tripped:
            self.down_since = self.last_success
        self.opens += 1
        pause = min(COOLDOWN[1], COOLDOWN[0] * 2 ** (self.opens - 1))
        self.state, self.reopen_at = "open", now + max(pause, retry_after or 0.0)
        return True


class ConcurrencyLimit:
    """How many calls one client sends at once, behind a circuit breaker.

    Static: always `ceiling`. Adaptive (AIMD): starts at an eighth of the ceiling (at least
    START, at most the ceiling). While the limit is in use, each success adds 1 (the ramp:
    doubling per round trip, until the first overload or a smaller latency rise), then
    1/limit (one per round trip; below the level of the last cut, half the way back to it
    per round trip). An overload (429/503, a Retry-After, or latency rising over its
    baseline) multiplies by BACKOFF the limit, or the calls in flight when the failed call
    was sent when fewer (a ramp overshoots), never below half, at most once per round trip
    (calls sent before a cut cannot cut again). No growth during a Retry-After (at most a
    round trip); never out of [1, ceiling]. `listener(limit, reason)` hears every change of
    the whole number and every breaker event.
    """

    def __init__(self, ceiling: int, *, adaptive: bool = True, max_outage: float = 300.0,
                 listener: Listener | None = None) -> None:
        self.ceiling, self.adaptive = ceiling, adaptive
        self.value = float(min(max(START, ceiling // 8), ceiling) if adaptive else ceiling)
        self.reason = "start"
        self.in_flight = 0
        self.breaker = Breaker(max_outage)
        self.latency = Latency()
        self.listener = listener
        self._slow_start = adaptive
        self._sent = 0
        self._cut_after = 0  # calls numbered up to this were sent before the last cut
        self._cut_from = 0.0  # the limit the last cut started from
        self._hold_until = 0.0  # no growth before (a Retry-After)
        self._draining = False
        self._waiting = 0  # calls waiting for a slot
        self._cond = asyncio.Condition()

    @property
    def limit(self) -> int:
        """The whole number of calls allowed at once now."""
        return max(1, int(self.value))

    @property
    def endpoint_down(self) -> bool:
        """Whether the breaker holds calls back (a failure now does not use a retry)."""
        return self.breaker.waiting(time.monotonic())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Ticket]:
        """Hold one slot for a call; its outcome (success, RetryableError) adjusts the limit."""
        ticket = await self._enter()
        try:
            yield ticket
        except BaseException as exc:
            await self._leave(ticket, exc)
            raise
        await self._leave(ticket, None)

    @asynccontextmanager
    async def drained(self) -> AsyncIterator[None]:
        """Hold back new calls and wait until none is in flight (to switch backends)."""
        async with self._cond:
            self._draining = True
            await self._cond.wait_for(lambda: self.in_flight == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._draining = False
                self._cond.notify_all()

    async def _enter(self) -> Ticket:
        async with self._cond:
            while True:
                wait = self.breaker.wait(time.monotonic())
                if wait is None and not self._draining and self.in_flight < self.limit:
                    break
                self._waiting += 1
                try:
                    if wait is None:
                        await self._cond.wait()
                    else:
                        with suppress(TimeoutError):
                            await asyncio.wait_for(self._cond.wait(), wait)
                except asyncio.CancelledError:
                    self._cond.notify(1)  # pass on a wakeup this waiter may have taken
                    raise
                finally:
                    self._waiting -= 1
            probe = self.breaker.enter()
            if probe:
                self._set(self.value, "probe")
            self.in_flight += 1
            self._sent += 1
            return Ticket(self._sent, time.monotonic(), probe, self.in_flight)

    async def _leave(self, ticket: Ticket, exc: BaseException | None) -> None:
        """Free the slot; a success or a fatal answer (the endpoint is up) or a retryable
        failure adjusts the limit and the breaker (a cancelled call does neither)."""
        async with self._cond:
            self.in_flight -= 1
            now, state = time.monotonic(), self.breaker.state
            if isinstance(exc, RetryableError):
                self._failed(ticket, exc, now)
            elif exc is None or isinstance(exc, BackendError):
                self._answered(ticket, now, grow=exc is None)
            elif ticket.probe and self.breaker.state == "probing":
                self.breaker.state, self.breaker.reopen_at = "open", now  # next call probes
            if self.breaker.state != state or self._draining:
                self._cond.notify_all()  # every waiter has a new deadline or may go
            else:
                self._cond.notify(max(0, self.limit - self.in_flight))  # as many as may go

    def _answered(self, ticket: Ticket, now: float, *, grow: bool) -> None:
        if self.breaker.success(now):
            self._slow_start = self.adaptive  # ramp up again after an outage
            self._set(self.value, "circuit closed")
        if not (self.adaptive and grow):
            return
        self.latency.add(now - ticket.started, self.limit)
        if self.latency.above(LATENCY_RISE, LATENCY_MARGIN):
            self._cut(ticket, "latency")
        elif self._slow_start and self.latency.above(*RAMP_END):
            self._slow_start = False
            self._set(self.value, "ramp end")
        elif self._in_use() and now >= self._hold_until:
            step = 1.0 if self._slow_start else max(
                1.0, (self._cut_from - self.value) / 2) / self.value
            self._set(min(float(self.ceiling), self.value + step),
                      "ramp" if self._slow_start else "success")

    def _failed(self, ticket: Ticket, exc: RetryableError, now: float) -> None:
        overload = _overload(exc)
        if self.adaptive and overload:
            if exc.retry_after:  # no growth meanwhile (at most a round trip)
                hold = min(exc.retry_after, self.latency.recent or exc.retry_after)
                self._hold_until = max(self._hold_until, now + hold)
            self._cut(ticket, overload)
        if self.breaker.failure(now, exc.retry_after, ticket.probe):
            self._set(self.value, "circuit open")

    def _in_use(self) -> bool:
        """Whether the limit holds calls back (grow only then: no growth without demand)."""
        return self._waiting > 0 or self.in_flight + 1 >= self.limit

    def _cut(self, ticket: Ticket, reason: str) -> bool:
        if ticket.seq <= self._cut_after:
            return False
        self._cut_after, self._slow_start = self._sent, False
        target = BACKOFF * min(self.value, ticket.in_flight)
        self._cut_from = min(self.value, ticket.in_flight)
        self._set(max(1.0, self.value / 2, target), reason)
        return True

    def _set(self, value: float, reason: str) -> None:
        before, self.value = self.limit, value
        if self.limit == before and reason in ("ramp", "success"):
            return
        self.reason = reason
        if self.listener is not None:
            self.listener(self.limit, reason)


def _overload(exc: RetryableError) -> str | None:
    """'429' or '503' (the server says it is overloaded), 'retry-after', or None."""
    for status in ("429", "503"):
        if str(exc).startswith(f"HTTP {status}"):
            return status
    return "retry-after" if exc.retry_after is not None else None
