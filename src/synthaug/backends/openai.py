"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, OpenAI) by base URL.

HTTP goes through aiohttp: at 50+ connections httpx's pool spends most of its time
scanning connections (measured in bench/engine.py), aiohttp's does not.

Replies are streamed (Server-Sent Events) by default, so a connection that goes silent
is noticed after `idle_timeout` seconds instead of the whole `timeout`; a server that
ignores `stream` and answers with one JSON body is read as such.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, SecretStr

from synthaug.backends.base import (
    Backend,
    BackendOptions,
    Completion,
    Request,
    sampling_fields,
)
from synthaug.errors import FatalBackendError, RetryableError


class OpenAIOptions(BackendOptions):
    """Options of the OpenAI-compatible backend."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = Field(default=None, repr=False)
    api_key_env: str = "OPENAI_API_KEY"
    endpoint: Literal["auto", "chat", "completions"] = "auto"
    # how a JSON schema is sent: OpenAI, vLLM and SGLang take "json_schema";
    # llama.cpp's servers take "json_object" with a "schema" field
    schema_format: Literal["json_schema", "json_object"] = "json_schema"
    # stream replies, so `idle_timeout` catches a stalled connection; a server that ignores
    # `stream` sends nothing until done, so give it `stream: false` if it is slow
    stream: bool = True


class OpenAIBackend(Backend[OpenAIOptions]):
    """Talks to `/chat/completions` and `/completions` over HTTP with aiohttp."""

    name = "openai"
    Options: ClassVar[type[BackendOptions]] = OpenAIOptions
    raw_completion = True
    json_schema = True
    logprobs = True

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        opts = self.options
        key = opts.api_key.get_secret_value() if opts.api_key else os.environ.get(
            opts.api_key_env, ""
        )
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._base = opts.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        # a non-streamed reply legitimately sends nothing until it is done: no idle limit
        self._timeout = aiohttp.ClientTimeout(
            total=opts.timeout, sock_connect=opts.connect_timeout,
            sock_read=opts.idle_timeout if opts.stream else None)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self.options.concurrency),
            )
        return self._session

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "base_url": self.options.base_url}

    async def generate(self, request: Request) -> list[Completion]:
        chat = request.messages is not None
        if self.options.endpoint == "completions" and chat:
            raise FatalBackendError("this backend is set to the completions endpoint only")
        body = _chat_body(request) if chat else _completion_body(request)
        path = "/chat/completions" if chat else "/completions"
        if request.json_schema is not None:
            body["response_format"] = _response_format(request.json_schema,
                                                       self.options.schema_format)
        body["model"] = self.model
        if self.options.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return await self._post(path, body, chat)

    async def _post(self, path: str, body: dict[str, Any], chat: bool) -> list[Completion]:
        """POST `body` and read the reply (an event stream or one JSON body)."""
        opts = self.options
        try:
            async with self._http().post(self._base + path, json=body) as response:
                status = response.status
                if status == 200 and _is_event_stream(response):
                    return await _read_stream(response.content, chat)
                raw = await response.read()
                retry_after = response.headers.get("retry-after")
        except aiohttp.ConnectionTimeoutError:
            raise RetryableError(f"no connection within {opts.connect_timeout}s "
                                 "(connect timeout)") from None
        except aiohttp.SocketTimeoutError:
            raise RetryableError(f"no data for {opts.idle_timeout}s (idle timeout)") from None
        except TimeoutError:
            raise RetryableError(f"timeout after {opts.timeout}s (total timeout)") from None
        except aiohttp.ClientError as exc:
            raise RetryableError(f"connection error: {type(exc).__name__}: {exc}") from None
        _raise_for_status(status, raw, retry_after)
        return _parse(_json_body(raw), chat)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.content_type == "text/event-stream"


def _raise_for_status(status: int, raw: bytes, retry_after: str | None) -> None:
    """429 and 5xx are worth retrying (after the server's hint); other 4xx are not."""
    if status < 400:
        return
    text = raw.decode("utf-8", "replace")
    if status == 429 or status >= 500:
        raise RetryableError(f"HTTP {status}: {text[:200]}",
                             retry_after=_retry_after(retry_after))
    raise FatalBackendError(f"HTTP {status}: {text[:300]}")


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RetryableError(f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise RetryableError(f"response has no choices: {str(data)[:200]}")
    return data


def _chat_body(request: Request) -> dict[str, Any]:
    body = {"messages": [dict(m) for m in request.messages or ()], **sampling_fields(request)}
    if request.logprobs or request.top_logprobs:
        body["logprobs"] = True
    if request.top_logprobs:
        body["top_logprobs"] = request.top_logprobs
    return body


def _completion_body(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": request.prompt, **sampling_fields(request)}
    if request.logprobs or request.top_logprobs:
        body["logprobs"] = max(1, request.top_logprobs)
    return body


def _response_format(schema: dict[str, Any], style: str) -> dict[str, Any]:
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True}}


def _parse(data: dict[str, Any], chat: bool) -> list[Completion]:
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    prompt_tokens, completion_tokens, reasoning = _split_usage(data.get("usage") or {},
                                                               len(choices))
    out = []
    for choice in choices:
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        if not isinstance(text, str):
            raise RetryableError(f"choice without text: {str(choice)[:200]}")
        out.append(Completion(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            reasoning_tokens=reasoning,
            usage_known=_has_usage(data.get("usage")),
            logprobs=_logprobs(choice.get("logprobs")),
            top_logprobs=_top_logprobs(choice.get("logprobs")),
        ))
    return out


def _split_usage(usage: dict[str, Any], choices: int) -> tuple[int, int, int]:
    """(prompt, completion, reasoning) tokens a choice: the reply's usage split evenly;
    reasoning tokens (`completion_tokens_details.reasoning_tokens`, where reported) are part
    of the completion tokens."""
    share = max(choices, 1)
    details = usage.get("completion_tokens_details") or {}
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return (int(usage.get("prompt_tokens") or 0) // share,
            int(usage.get("completion_tokens") or 0) // share,
            int(reasoning or 0) // share)


def _has_usage(usage: Any) -> bool:
    """Whether a reply reported its token usage (some servers send none)."""
    return isinstance(usage, dict) and ("prompt_tokens" in usage or "completion_tokens" in usage)


def _logprobs(value: Any) -> list[float] | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("content"), list):
        return [float(t["logprob"]) for t in value["content"]]
    if isinstance(value.get("token_logprobs"), list):
        return [float(x) for x in value["token_logprobs"] if x is not None]
    return None


def _top_logprobs(value: Any) -> list[dict[str, float]] | None:
    """Per token, {alternative token: logprob}: chat's `content[i].top_logprobs` lists or the
    completions API's `top_logprobs` mappings."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("content"), list):
        found = [{str(alt["token"]): float(alt["logprob"]) for alt in t.get("top_logprobs") or ()}
                 for t in value["content"]]
    elif isinstance(value.get("top_logprobs"), list):
        found = [{str(k): float(v) for k, v in (t or {}).items()} for t in value["top_logprobs"]]
    else:
        return None
    return found if any(found) else None


class _Assembly:
    """The choices of a streamed reply, put together chunk by chunk."""

    __slots__ = ("chat", "finish", "logprobs", "texts", "top", "usage")

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str | None] = {}
        self.logprobs: dict[int, list[float]] = {}
        self.top: dict[int, list[dict[str, float]]] = {}
        self.usage: dict[str, Any] = {}

    def add(self, chunk: Any) -> None:
        """Fold one decoded `data:` event into the choices; RetryableError if malformed."""
        try:
            if chunk.get("error") is not None:
                raise RetryableError(f"error in the stream: {str(chunk['error'])[:200]}")
            for choice in chunk.get("choices") or ():
                self._add_choice(choice)
            if chunk.get("usage"):
                self.usage = chunk["usage"]
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            raise RetryableError(f"malformed stream chunk ({exc}): {str(chunk)[:200]}") from None

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = int(choice.get("index") or 0)
        parts = self.texts.get(index)
        if parts is None:
            parts = self.texts[index] = []
        piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
        if piece:
            if not isinstance(piece, str):
                raise TypeError("text is not a string")
            parts.append(piece)
        if choice.get("finish_reason") is not None:
            self.finish[index] = choice["finish_reason"]
        found = _logprobs(choice.get("logprobs"))
        if found is not None:
            self.logprobs.setdefault(index, []).extend(found)
        top = _top_logprobs(choice.get("logprobs"))
        if top is not None:
            self.top.setdefault(index, []).extend(top)

    def completions(self) -> list[Completion]:
        """One completion per choice seen, by index; usage split evenly as for a body."""
        prompt_tokens, completion_tokens, reasoning = _split_usage(self.usage, len(self.texts))
        return [Completion(text="".join(self.texts[i]), finish_reason=self.finish.get(i),
                           prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                           reasoning_tokens=reasoning, usage_known=_has_usage(self.usage),
                           logprobs=self.logprobs.get(i), top_logprobs=self.top.get(i))
                for i in sorted(self.texts)]


async def _read_stream(content: aiohttp.StreamReader, chat: bool) -> list[Completion]:
    """Read Server-Sent Events up to `data: [DONE]`. Transport errors propagate to the
    caller's mapping; a stream that ends early or holds a malformed chunk is a
    RetryableError. The chunks are decoded together at the end: one JSON parse a reply."""
    events: list[bytes] = []
    data: list[bytes] = []
    pending = b""
    done = False
    async for received in content.iter_any():
        *lines, pending = (pending + received).split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                data.append(line[5:].strip())
            elif data and not line.strip(b"\r"):  # a blank line ends an event
                done = _event(events, data)
                data = []
                if done:
                    break
        if done:
            break
    if not done and data:  # the last event may lack its blank line
        done = _event(events, data)
    if not done:
        raise RetryableError("the stream ended before data: [DONE]")
    await _drain(content)
    assembly = _Assembly(chat)
    for chunk in _decode(events):
        assembly.add(chunk)
    return assembly.completions()


def _event(events: list[bytes], data: list[bytes]) -> bool:
    """Keep one event's data; True when it is the end marker."""
    payload = data[0] if len(data) == 1 else b"\n".join(data)
    if payload == b"[DONE]":
        return True
    events.append(payload)
    return False


def _decode(events: list[bytes]) -> list[dict[str, Any]]:
    """The events' JSON objects, parsed as one array."""
    try:
        chunks: list[dict[str, Any]] = json.loads(b"[" + b",".join(events) + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        bad = next((e for e in events if not _is_json(e)), b"")
        raise RetryableError(f"malformed stream chunk ({exc}): {bad[:200]!r}") from None
    if len(chunks) != len(events) or not all(isinstance(c, dict) for c in chunks):
        raise RetryableError(f"malformed stream chunks: {b','.join(events)[:200]!r}")
    return chunks


def _is_json(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read what follows [DONE] (the body's end) so the connection goes back to the pool;
    the answer is complete, so a server that lingers here costs at most a second."""
    try:
        async with asyncio.timeout(1.0):
            while not content.at_eof() and await content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


def _retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when the
    header is absent or unreadable."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None  # unreadable: the usual backoff applies
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None
