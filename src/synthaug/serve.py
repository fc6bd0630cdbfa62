"""`synthaug serve`: a recipe as an HTTP service that streams records as they complete.

The recipe is validated and its backends, clients and response cache are built once, before
the port is bound (`Service.open`). Each `POST /v1/records` runs the recipe's steps over the
posted records with the executor's own machinery (`executors.chain.chain_steps`) and streams
one JSON event per record made, failure, drop or reject, then a `done` event with the counts:
NDJSON by default, Server-Sent Events for `Accept: text/event-stream`. A client that hangs up
cancels its steps (and their calls in flight); what was answered stays in the cache, so the
same request again is free for that part. See docs/serve.md.
"""

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug.backends.base import AnyBackend
from synthaug.backends.cache import ResponseCache
from synthaug.backends.pool import AnyClient, make_client
from synthaug.budget import Meter
from synthaug.errors import InputError, MissingDependency
from synthaug.executors.chain import chain_steps
from synthaug.io import SeenRecords, aiter_records, decode_record
from synthaug.pipeline import Pipeline, build_backend
from synthaug.records import Record, dumps, source_record
from synthaug.steps.context import StepStats

LOOPBACK = ("127.0.0.1", "::1", "localhost")
EVENTS = {"rejects": "reject", "failures": "failure", "dropped": "drop"}  # side kind -> event
SOURCE = "request"  # records' `_meta.source` is "request:LINE"


class BadBody(ValueError):
    """The request body is not NDJSON, a JSON list of records, nor {"records": [...]}."""


@dataclass
class Service:
    """A validated recipe with its clients and cache, shared by every request."""

    pipeline: Pipeline
    state_dir: Path
    token: str | None = None  # None: no authentication (loopback only, checked by the CLI)
    max_pending: int = 256  # input records of requests in progress, at most
    max_body_bytes: int = 16 << 20  # a request body beyond is answered 413, unread
    queue_size: int = 64  # events a slow client may leave unread before the steps wait
    pending: int = 0
    clients: dict[str, AnyClient] = field(default_factory=dict)
    cache: ResponseCache | None = None

    def open(self) -> "Service":
        """Check the recipe and build backends, clients and the cache (no call, no port)."""
        self.pipeline.check(None)
        backends: dict[str, AnyBackend] = {}
        for role in self.pipeline.roles():
            backends[role] = build_backend(self.pipeline.backends[role],
                                           file=self.pipeline.source, role=role)
        self.pipeline.check_backends(backends)
        self.cache = ResponseCache(self.state_dir / "cache.sqlite")
        self.clients = {role: make_client(b, self.cache) for role, b in backends.items()}
        return self

    async def aclose(self) -> None:
        """Close every client (its backend) and the cache."""
        for client in self.clients.values():
            await client.close()
        if self.cache is not None:
            self.cache.close()

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries the token (compared in constant time)."""
        if self.token is None:
            return True
        scheme, _, given = (header or "").partition(" ")
        return hmac.compare_digest(given.strip().encode(), self.token.encode()) \
            and scheme.lower() == "bearer"

    def describe(self) -> dict[str, Any]:
        """GET /v1/recipe: name, citations and steps."""
        recipe = self.pipeline.recipe
        return {"name": self.pipeline.name, "cites": recipe.cites if recipe else [],
                "input": sorted(self.pipeline.input_requirements()),
                "steps": self.pipeline.config()["steps"]}

    def admit(self, count: int) -> bool:
        """Reserve room for `count` input records; False when that would pass --max-pending."""
        if self.pending + count > self.max_pending:
            return False
        self.pending += count
        return True

    def start(self, records: list[Record], rejects: list[dict[str, Any]]) -> "_Run":
        """Start the recipe's steps over an admitted request's records."""
        run = _Run(self, len(records))
        for row in rejects:
            run.side.write("rejects", row)
        run.task = asyncio.create_task(self._produce(records, run))
        return run

    async def _produce(self, records: list[Record], run: "_Run") -> None:
        stats = [StepStats(label) for label, _ in self.pipeline.steps]
        usage = Meter()
        made = chain_steps(self.pipeline.steps, aiter_records(iter(records)),
                           recipe=self.pipeline.name, seed=self.pipeline.seed, stats=stats,
                           side=run.side, clients=self.clients, usage=usage,
                           out_dir=self.state_dir, queue_size=self.queue_size)
        count = 0
        try:
            async with aclosing(made):
                async for record in made:
                    await run.room.acquire()
                    run.events.put_nowait({"event": "record", "record": record})
                    count += 1
        except Exception as exc:  # a step that stopped on an error ends the stream with it
            run.events.put_nowait({"event": "error", "reason": f"{type(exc).__name__}: {exc}"})
            return
        run.events.put_nowait({
            "event": "done", "records": count, **run.side.counts,
            "steps": {s.label: s.as_dict() for s in stats}, "usage": usage.summary()})


class _Run:
    """One request in progress: its event queue, with room for `queue_size` unread records
    (back-pressure on the steps), and the task running its steps."""

    def __init__(self, service: Service, admitted: int) -> None:
        self.service, self.admitted = service, admitted
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.room = asyncio.Semaphore(service.queue_size)
        self.side = _SideEvents(self.events)
        self.task: asyncio.Task[None] | None = None

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        """The events until `done` (or `error`)."""
        while True:
            event = await self.events.get()
            if event["event"] == "record":
                self.room.release()
            yield event
            if event["event"] in ("done", "error"):
                return

    def close(self) -> None:
        """Cancel the steps (a client gone: nothing goes on, nor pays, for it) and give
        back the admitted room; idempotent."""
        if self.task is not None:
            self.task.cancel()
        self.service.pending -= self.admitted
        self.admitted = 0


class _SideEvents:
    """Side files of one request: each row becomes a typed event in the stream."""

    def __init__(self, events: asyncio.Queue[dict[str, Any]]) -> None:
        self.events = events
        self.counts = dict.fromkeys(EVENTS, 0)

    def write(self, kind: str, row: dict[str, Any]) -> None:
        """Stream one reject, failure or drop row as an event."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.events.put_nowait({"event": EVENTS.get(kind, kind), **row})


async def read_capped(request: Any, limit: int) -> bytes | None:
    """The request's body, or None as soon as it is known to exceed `limit` bytes (from
    Content-Length, or while reading the stream)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(body: bytes, content_type: str, required: dict[str, tuple[type, ...]],
               recipe: str) -> tuple[list[Record], list[dict[str, Any]]]:
    """Input records and reject rows of a request body (NDJSON, or JSON when the content type
    says so: a list, or {"records": [...]}); a bad line or item is a reject naming its line
    (for JSON, the item's 1-based position) and field. Raises BadBody."""
    if "json" in content_type and "ndjson" not in content_type:
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise BadBody(f"the body is not JSON: {exc}") from None
        if isinstance(value, dict) and isinstance(value.get("records"), list):
            value = value["records"]
        if not isinstance(value, list):
            raise BadBody('expected a JSON list of records or {"records": [...]}')
        lines = [json.dumps(item).encode() for item in value]
    else:
        lines = body.split(b"\n")
    seen = SeenRecords("id")
    records: list[Record] = []
    rejects: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            fields = decode_record(raw, SOURCE, number, required)
            seen.check(fields, raw, SOURCE, number)
        except InputError as exc:
            rejects.append({"step": "input", "line": number, "field": exc.field,
                            "reason": exc.reason, "raw": raw.decode("utf-8", "replace")})
            continue
        records.append(source_record(fields, source=SOURCE, index=number - 1, recipe=recipe))
    return records, rejects


def encode(event: dict[str, Any], sse: bool) -> bytes:
    """One event as an NDJSON line, or as a Server-Sent Event named after its kind."""
    data = dumps(event)
    if sse:
        return f"event: {event['event']}\ndata: {data}\n\n".encode()
    return (data + "\n").encode()


def require() -> None:
    """Raise MissingDependency unless FastAPI and uvicorn are installed (extra `serve`)."""
    for package in ("fastapi", "uvicorn"):
        try:
            __import__(package)
        except ImportError:
            raise MissingDependency(package, "synthaug serve", "serve") from None


def make_app(service: Service, on_stop: Callable[[], None] | None = None) -> Any:
    """The FastAPI application of a service (closes the service's clients at shutdown, then
    calls `on_stop`)."""
    require()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await service.aclose()
        if on_stop is not None:
            on_stop()

    app = FastAPI(title=f"synthaug serve {service.pipeline.name}", lifespan=lifespan)
    streamed = _streamed_class()

    @app.middleware("http")
    async def auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                   ) -> Response:
        if request.url.path != "/healthz" and \
                not service.authorized(request.headers.get("authorization")):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "recipe": service.pipeline.name, "pending": service.pending}

    @app.get("/v1/recipe")
    async def recipe() -> dict[str, Any]:
        return service.describe()

    @app.post("/v1/records")
    async def records(request: Request) -> Response:
        body = await read_capped(request, service.max_body_bytes)
        if body is None:
            return JSONResponse({"error": f"body over {service.max_body_bytes} bytes "
                                 "(--max-body-bytes); split the request"}, status_code=413)
        try:
            found, rejects = parse_body(body,
                                        request.headers.get("content-type", ""),
                                        service.pipeline.input_requirements(),
                                        service.pipeline.name)
        except BadBody as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if len(found) + len(rejects) > service.max_pending:  # bad lines count: no free work
            return JSONResponse({"error": f"{len(found) + len(rejects)} lines: more than "
                                 f"--max-pending "
                                 f"({service.max_pending}); split the request"}, status_code=413)
        if not service.admit(len(found)):
            return JSONResponse({"error": "busy: too many records in progress"},
                                status_code=429, headers={"Retry-After": "1"})
        sse = "text/event-stream" in request.headers.get("accept", "")
        run = service.start(found, rejects)
        events = (encode(event, sse) async for event in run.stream())
        answer: Response = streamed(events, run, media_type="text/event-stream" if sse
                                    else "application/x-ndjson")
        return answer

    return app


def _streamed_class() -> Any:
    from starlette.responses import StreamingResponse
    from starlette.types import Receive, Scope, Send

    class Streamed(StreamingResponse):
        """A stream whose run is closed however the response ends (done, or client gone)."""

        def __init__(self, content: AsyncIterator[bytes], run: _Run, media_type: str) -> None:
            super().__init__(content, media_type=media_type)
            self.run = run

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                self.run.close()

    return Streamed
