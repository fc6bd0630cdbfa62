"""OpenTelemetry metrics of LLM calls (the optional `telemetry` extra); off unless enabled.

Enabled by `SYNTHAUG_OTEL=1` in the environment (read when the first client is made) or by
`enable()`. Where the metrics go: a Prometheus endpoint when `SYNTHAUG_OTEL_PROMETHEUS` is
`PORT` or `HOST:PORT` (host default 127.0.0.1), else the global meter provider an
application or `opentelemetry-instrument` set up (OTLP and the rest, configured the usual
OpenTelemetry way). Nothing is sent anywhere unless one of those is configured.

Metrics, with the `gen_ai.*` semantic conventions where they define one:

    gen_ai.client.operation.duration   histogram, s          every call (error.type on failure)
    gen_ai.client.token.usage          histogram, {token}    gen_ai.token.type input|output
    synthaug.client.requests           counter, {request}    every call sent
    synthaug.client.errors             counter, {request}    failed calls, with error.type
    synthaug.client.in_flight          gauge, {request}      calls in flight now
    synthaug.client.concurrency_limit  gauge, {request}      the (adaptive) limit now

Attributes: gen_ai.operation.name (chat | text_completion), gen_ai.provider.name (the
backend), gen_ai.request.model, server.address/server.port (when the backend has a URL).
The client calls `Observer.call` once per call; without telemetry no OpenTelemetry module is
imported.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from synthaug.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

    from synthaug.backends.base import Completion, Request
    from synthaug.backends.client import LLMClient

log = logging.getLogger(__name__)
ENV_ON, ENV_PROMETHEUS = "SYNTHAUG_OTEL", "SYNTHAUG_OTEL_PROMETHEUS"
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # the semantic conventions' advice
TOKEN_BUCKETS = tuple(float(4**k) for k in range(14))  # 1, 4, 16, ... 67108864
_active: dict[str, Observer | None] = {}


class Observer:
    """Records the metrics of every client it watches on one OpenTelemetry meter."""

    def __init__(self, meter: Meter) -> None:
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.requests = meter.create_counter(
            "synthaug.client.requests", unit="{request}", description="LLM calls sent")
        self.errors = meter.create_counter(
            "synthaug.client.errors", unit="{request}", description="LLM calls that failed")
        meter.create_observable_gauge(
            "synthaug.client.in_flight", [self._in_flight], unit="{request}",
            description="LLM calls in flight")
        meter.create_observable_gauge(
            "synthaug.client.concurrency_limit", [self._limits], unit="{request}",
            description="LLM calls allowed at once (the adaptive limit)")
        self.clients: weakref.WeakSet[LLMClient] = weakref.WeakSet()

    def watch(self, client: LLMClient) -> None:
        """Report `client`'s in-flight calls and limit while it lives."""
        self.clients.add(client)

    def call(self, client: LLMClient, request: Request, seconds: float,
             replies: list[Completion], error: Exception | None) -> None:
        """Record one call: its duration, its tokens, and its error type when it failed."""
        attrs = {"gen_ai.operation.name": "chat" if request.messages is not None
                 else "text_completion", **_client_attributes(client)}
        self.requests.add(1, attrs)
        if error is not None:
            attrs = {**attrs, "error.type": _error_type(error)}
            self.errors.add(1, attrs)
        self.duration.record(seconds, attrs)
        if replies:
            for kind, count in (("input", sum(r.prompt_tokens for r in replies)),
                                ("output", sum(r.completion_tokens for r in replies))):
                if count:
                    self.tokens.record(count, {**attrs, "gen_ai.token.type": kind})

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._gauge(lambda c: c.stats.in_flight)

    def _limits(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._gauge(lambda c: c.limiter.limit)

    def _gauge(self, value: Any) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(value(c), _client_attributes(c)) for c in list(self.clients)]


def observer_for(client: LLMClient) -> Observer | None:
    """The active observer, now watching `client`; None while telemetry is off."""
    if ENV_ON not in _active:
        _active[ENV_ON] = enable_from_env()
    observer = _active[ENV_ON]
    if observer is not None:
        observer.watch(client)
    return observer


def enable(meter_provider: MeterProvider | None = None, *,
           prometheus: str | None = None) -> Observer:
    """Turn telemetry on for clients made from now on; returns the observer.

    `meter_provider`: where the metrics go (default: a Prometheus endpoint at `prometheus`,
    'PORT' or 'HOST:PORT', else the global meter provider)."""
    try:
        from opentelemetry import metrics
    except ImportError:
        raise MissingDependency("opentelemetry-sdk", "telemetry", "telemetry") from None
    if meter_provider is None and prometheus:
        meter_provider = _prometheus(prometheus)
    provider = meter_provider or metrics.get_meter_provider()
    observer = Observer(provider.get_meter("synthaug"))
    _active[ENV_ON] = observer
    return observer


def disable() -> None:
    """Turn telemetry off for clients made from now on (and stop reading the environment)."""
    _active[ENV_ON] = None


def enable_from_env() -> Observer | None:
    """An observer when `SYNTHAUG_OTEL` is on (1, true, yes), else None."""
    if os.environ.get(ENV_ON, "").strip().lower() not in ("1", "true", "yes", "on"):
        return None
    return enable(prometheus=os.environ.get(ENV_PROMETHEUS) or None)


def _prometheus(where: str) -> MeterProvider:
    """A meter provider read by a Prometheus endpoint served at `where` ('PORT'/'HOST:PORT')."""
    match = re.fullmatch(r"(?:(.+):)?(\d{1,5})", where.strip())
    if not match:
        raise ConfigError(f"expected PORT or HOST:PORT, got {where!r}", field=ENV_PROMETHEUS)
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from prometheus_client import start_http_server
    except ImportError:
        raise MissingDependency("opentelemetry-exporter-prometheus", "the Prometheus endpoint",
                                "telemetry") from None
    host, port = match.group(1) or "127.0.0.1", int(match.group(2))
    start_http_server(port, addr=host)
    log.info("Prometheus metrics at http://%s:%d/metrics", host, port)
    return SdkMeterProvider(metric_readers=[PrometheusMetricReader()])


def _client_attributes(client: LLMClient) -> dict[str, str | int]:
    attrs: dict[str, str | int] = {"gen_ai.provider.name": client.backend.name,
                                   "gen_ai.request.model": client.backend.model}
    url = getattr(client.backend.options, "base_url", None)
    if isinstance(url, str):
        parts = urlsplit(url)
        if parts.hostname:
            attrs["server.address"] = parts.hostname
            attrs["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return attrs


def _error_type(error: Exception) -> str:
    """The HTTP status when the error names one (the conventions' advice), else its class."""
    match = re.match(r"HTTP (\d{3})", str(error))
    return match.group(1) if match else type(error).__name__
