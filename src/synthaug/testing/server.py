"""A real OpenAI-compatible HTTP server on loopback with scripted replies and faults.

Replies come from a script (consumed in order) and then from a responder function;
each can be a text, an HTTP error with headers (429 + Retry-After), a delay (timeouts),
a malformed or truncated body. The server counts calls and the peak in-flight requests.
Run `python -m synthaug.testing --delay 0.1` for a standalone one (benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Reply:
    """One scripted answer."""

    text: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: str | None = None  # a raw body, sent as is (malformed JSON, truncation)
    finish_reason: str = "stop"


Responder = Callable[[dict[str, Any]], "Reply | str"]


def echo(body: dict[str, Any]) -> Reply:
    """The default answer: 'echo: ' and the last user message or the prompt."""
    if "messages" in body:
        return Reply(text="echo: " + str(body["messages"][-1]["content"]))
    return Reply(text="echo: " + str(body.get("prompt", "")))


class FakeOpenAIServer:
    """An OpenAI-shaped server in a background thread; use as a context manager."""

    def __init__(self, responder: Responder | None = None, *, delay: float = 0.0,
                 port: int = 0) -> None:
        self.responder: Responder = responder or echo
        self.delay = delay
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

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.calls.append(body)
            item = self.script.popleft() if self.script else None
        reply = item if item is not None else self.responder(body)
        return Reply(text=reply) if isinstance(reply, str) else reply

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        reply = self._next(body)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(reply.delay or self.delay)
        finally:
            with self._lock:
                self.in_flight -= 1
        if reply.body is not None:
            return Response(reply.body, status_code=reply.status, headers=reply.headers,
                            media_type="application/json")
        if reply.status != 200:
            return JSONResponse({"error": {"message": reply.text}}, status_code=reply.status,
                                headers=reply.headers)
        return JSONResponse(_completion(body, reply, request.url.path.endswith("chat/completions")))

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


def _completion(body: dict[str, Any], reply: Reply, chat: bool) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    choices = []
    for i in range(n):
        text = reply.text if n == 1 else f"{reply.text} [{i}]"
        choice: dict[str, Any] = {"index": i, "finish_reason": reply.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choices.append(choice)
    return {"id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
            "model": body.get("model", "fake"), "choices": choices,
            "usage": {"prompt_tokens": 10 * n, "completion_tokens": len(reply.text.split()) * n}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    """Serve until interrupted (for benchmarks and manual tests)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeOpenAIServer(delay=args.delay, port=args.port)
    print(json.dumps({"url": server.url}), flush=True)
    config = uvicorn.Config(server.app(), host="127.0.0.1", port=server.port,
                            log_level="error", lifespan="off", backlog=4096)
    uvicorn.Server(config).run()


