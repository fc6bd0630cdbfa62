"""A real OpenAI-compatible HTTP server on loopback with scripted replies and faults.

Replies come from a script (consumed in order) and then from a responder function;
each can be a text, an HTTP error with headers (429 + Retry-After), a delay before the
headers, a stall in the middle of a stream, a malformed or truncated body. `stream: true`
requests get Server-Sent Events as OpenAI sends them. The server counts calls and the
peak in-flight requests. With a `capacity` it answers 429 (Retry-After) above that many
requests in flight; `outage(seconds)` makes it answer 503, or refuse connections, for a while.
Run `python -m synthaug.testing --delay 0.1` for a standalone one (benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


@dataclass
class Reply:
    """One scripted answer; the faults work for streamed and plain requests alike."""

    text: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the headers are sent
    body: str | None = None  # sent as is: the JSON body, or a streamed request's events
    finish_reason: str = "stop"
    stall: float = 0.0  # seconds of silence after the first chunk(s) of a stream
    logprobs: list[float] | None = None  # per word, when asked (default -0.1, -0.2, ...)
    # per word, the alternatives and their logprobs sent when top logprobs are asked
    alternatives: list[dict[str, float]] | None = None
    ignore_stream: bool = False  # answer with one JSON body even when asked to stream
    # reported in usage.completion_tokens_details (part of the completion tokens), when > 0
    reasoning_tokens: int = 0
    usage: bool = True  # False: the answer carries no `usage` (as some servers send)


Responder = Callable[[dict[str, Any]], "Reply | str"]


def echo(body: dict[str, Any]) -> Reply:
    """The default answer: 'echo: ' and the last user message or the prompt."""
    if "messages" in body:
        return Reply(text="echo: " + str(body["messages"][-1]["content"]))
    return Reply(text="echo: " + str(body.get("prompt", "")))


class FakeOpenAIServer:
    """An OpenAI-shaped server in a background thread; use as a context manager."""

    def __init__(self, responder: Responder | None = None, *, delay: float = 0.0,
                 port: int = 0, capacity: int | None = None, retry_after: float = 1.0) -> None:
        self.responder: Responder = responder or echo
        self.delay = delay
        self.capacity, self.retry_after = capacity, retry_after
        self.refused = 0  # requests answered 429 (over capacity) or 503 (outage)
        self._down_until = 0.0
        self.script: deque[Reply | str] = deque()
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = port or _free_port()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL (ending in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: Reply | str) -> None:
        """Answer the next requests with `replies`, in order."""
        self.script.extend(replies)

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(routes=[
            Route("/v1/chat/completions", self._handle, methods=["POST"]),
            Route("/v1/completions", self._handle, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def outage(self, seconds: float, *, refuse: bool = False) -> None:
        """For `seconds`, answer every request 503, or (`refuse`) stop listening at all."""
        if not refuse:
            self._down_until = time.monotonic() + seconds
            return
        self.stop()
        restart = threading.Timer(seconds, self.start)
        restart.daemon = True
        restart.start()

    def _refusal(self) -> Response | None:
        """503 during an outage, 429 above the capacity; None to serve the request."""
        if time.monotonic() < self._down_until:
            status, headers = 503, {}
        elif self.capacity is not None and self.in_flight >= self.capacity:
            status, headers = 429, {"Retry-After": f"{self.retry_after:g}"}
        else:
            return None
        with self._lock:
            self.refused += 1
        return JSONResponse({"error": {"message": "overloaded" if status == 429 else "down"}},
                            status_code=status, headers=headers)

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.calls.append(body)
            item = self.script.popleft() if self.script else None
        reply = item if item is not None else self.responder(body)
        return Reply(text=reply) if isinstance(reply, str) else reply

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        refusal = self._refusal()  # no await until the request counts in flight below
        if refusal is not None:
            return refusal
        reply = self._next(body)
        chat = request.url.path.endswith("chat/completions")
        # errors are never streamed; a stream counts in flight until its last event
        streamed = bool(body.get("stream")) and not reply.ignore_stream and reply.status == 200
        flight = _Flight(self)
        try:
            await _pause(request, reply.delay or self.delay)
        finally:
            if not streamed:
                flight.end()
        if reply.body is not None and streamed:
            return _Streamed(_raw(reply.body, flight), flight, reply.headers)
        if reply.body is not None:
            return Response(reply.body, status_code=reply.status, headers=reply.headers,
                            media_type="application/json")
        if reply.status != 200:
            return JSONResponse({"error": {"message": reply.text}}, status_code=reply.status,
                                headers=reply.headers)
        if streamed:
            events = _events(body, reply, chat)
            return _Streamed(_stream(events, reply, chat, flight), flight, reply.headers)
        return JSONResponse(_completion(body, reply, chat), headers=reply.headers)

    def start(self) -> FakeOpenAIServer:
        """Start serving in a background thread; returns once it accepts connections."""
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="error",
                                lifespan="off", backlog=4096)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server and self._thread:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Flight:
    """One request counted in flight until `end()` (idempotent)."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server, self.open = server, True
        with server._lock:
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)

    def end(self) -> None:
        with self.server._lock:
            if self.open:
                self.server.in_flight -= 1
                self.open = False


class _Streamed(StreamingResponse):
    """A streamed body whose request stops counting as in flight however the stream ends."""

    def __init__(self, content: AsyncIterator[bytes], flight: _Flight,
                 headers: dict[str, str]) -> None:
        super().__init__(content, headers=headers, media_type="text/event-stream")
        self.flight = flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.flight.end()


async def _pause(request: Request, seconds: float) -> None:
    """Sleep `seconds`, or less if the client hangs up first (so a server stops promptly)."""
    if seconds <= 0:
        return
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({gone}, timeout=seconds)
    finally:
        gone.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _raw(body: str, flight: _Flight) -> AsyncIterator[bytes]:
    try:
        yield body.encode("utf-8")
    finally:
        flight.end()


async def _stream(events: list[bytes], reply: Reply, chat: bool,
                  flight: _Flight) -> AsyncIterator[bytes]:
    """The events one write each; silent for `reply.stall` seconds after the first content
    chunk. Counted in flight until the last event (before the body's end is sent)."""
    first = 2 if chat else 1
    try:
        for i, event in enumerate(events):
            if i == first and reply.stall > 0:
                await asyncio.sleep(reply.stall)  # cancelled when the client hangs up
            yield event
    finally:
        flight.end()


def _pieces(text: str) -> list[str]:
    """`text` split after each run of spaces: the pieces join back to `text`."""
    return re.split(r"(?<=\s)(?=\S)", text) if text else [""]


def _word_logprobs(reply: Reply, count: int) -> list[float]:
    given = reply.logprobs or []
    return [given[k] if k < len(given) else -0.1 * (k + 1) for k in range(count)]


def _choice_texts(body: dict[str, Any], reply: Reply) -> list[str]:
    n = int(body.get("n") or 1)
    return [reply.text if n == 1 else f"{reply.text} [{i}]" for i in range(n)]


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Usage as OpenAI reports it: 10 prompt tokens and one completion token a word (plus
    the reasoning tokens, shown apart too) per choice."""
    n = int(body.get("n") or 1)
    completion = (len(reply.text.split()) + reply.reasoning_tokens) * n
    usage: dict[str, Any] = {"prompt_tokens": 10 * n, "completion_tokens": completion,
                             "total_tokens": 10 * n + completion}
    if reply.reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens * n}
    return usage


def _top(body: dict[str, Any], reply: Reply, chat: bool, start: int,
         count: int) -> list[dict[str, float]]:
    """The alternatives of words start..start+count, cut to the number asked."""
    wanted = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)
    given = reply.alternatives or []
    found = [given[k] if k < len(given) else {} for k in range(start, start + count)]
    return [dict(sorted(alt.items(), key=lambda kv: -kv[1])[:wanted]) for alt in found]


def _logprobs(pieces: list[str], values: list[float], chat: bool,
              tops: list[dict[str, float]]) -> dict[str, Any]:
    if chat:
        return {"content": [{"token": p, "logprob": v, "bytes": list(p.encode()),
                             "top_logprobs": [{"token": t, "logprob": lp}
                                              for t, lp in top.items()]}
                            for p, v, top in zip(pieces, values, tops, strict=True)]}
    return {"tokens": pieces, "token_logprobs": values,
            "top_logprobs": tops if any(tops) else None,
            "text_offset": [sum(len(p) for p in pieces[:k]) for k in range(len(pieces))]}


def _completion(body: dict[str, Any], reply: Reply, chat: bool) -> dict[str, Any]:
    choices = []
    for i, text in enumerate(_choice_texts(body, reply)):
        choice: dict[str, Any] = {"index": i, "finish_reason": reply.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        if body.get("logprobs"):
            pieces = _pieces(text)
            choice["logprobs"] = _logprobs(pieces, _word_logprobs(reply, len(pieces)), chat,
                                           _top(body, reply, chat, 0, len(pieces)))
        choices.append(choice)
    return {"id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
            "created": 0, "model": body.get("model", "fake"), "choices": choices,
            **({"usage": _usage(body, reply)} if reply.usage else {})}


def _events(body: dict[str, Any], reply: Reply, chat: bool) -> list[bytes]:
    """The Server-Sent Events of a streamed answer: for chat a role delta first, then one
    chunk a word (choices interleaved by `index`), a finish chunk per choice, the usage
    chunk when `stream_options.include_usage`, then `data: [DONE]`."""
    texts = _choice_texts(body, reply)
    split = [_pieces(t) for t in texts]
    chunks: list[dict[str, Any]] = []
    if chat:
        chunks += [{"index": i, "delta": {"role": "assistant", "content": ""},
                    "logprobs": None, "finish_reason": None} for i in range(len(texts))]
    values = [_word_logprobs(reply, len(pieces)) for pieces in split]
    for k in range(max(len(pieces) for pieces in split)):
        for i, pieces in enumerate(split):
            if k < len(pieces):
                logprobs = (_logprobs([pieces[k]], [values[i][k]], chat,
                                      _top(body, reply, chat, k, 1))
                            if body.get("logprobs") else None)
                part = {"delta": {"content": pieces[k]}} if chat else {"text": pieces[k]}
                chunks.append({"index": i, **part, "logprobs": logprobs,
                               "finish_reason": None})
    chunks += [{"index": i, **({"delta": {}} if chat else {"text": ""}), "logprobs": None,
                "finish_reason": reply.finish_reason} for i in range(len(texts))]
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": "cmpl-fake", "object": kind, "created": 0, "model": body.get("model", "fake")}
    data = [{**head, "choices": [c]} for c in chunks]
    if (body.get("stream_options") or {}).get("include_usage") and reply.usage:
        data.append({**head, "choices": [], "usage": _usage(body, reply)})
    return [b"data: " + json.dumps(d).encode() + b"\n\n" for d in data] + [b"data: [DONE]\n\n"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    """Serve until interrupted (for benchmarks and manual tests)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--retry-after", type=float, default=1.0)
    args = parser.parse_args()
    server = FakeOpenAIServer(delay=args.delay, port=args.port, capacity=args.capacity,
                              retry_after=args.retry_after)
    print(json.dumps({"url": server.url}), flush=True)
    config = uvicorn.Config(server.app(), host="127.0.0.1", port=server.port,
                            log_level="error", lifespan="off", backlog=4096)
    uvicorn.Server(config).run()


