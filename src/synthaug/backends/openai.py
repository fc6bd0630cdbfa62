"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, OpenAI) by base URL.

HTTP goes through aiohttp: at 50+ connections httpx's pool spends most of its time
scanning connections (measured in bench/engine.py), aiohttp's does not.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, SecretStr

from synthaug.backends.base import Backend, BackendOptions, Completion, Request
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


class OpenAIBackend(Backend):
    """Talks to `/chat/completions` and `/completions` over HTTP with httpx."""

    name = "openai"
    Options: ClassVar[type[BackendOptions]] = OpenAIOptions
    raw_completion = True
    json_schema = True
    logprobs = True

    def __init__(self, options: BackendOptions) -> None:
        assert isinstance(options, OpenAIOptions)
        super().__init__(options)
        self.opts = options
        key = options.api_key.get_secret_value() if options.api_key else os.environ.get(
            options.api_key_env, ""
        )
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._base = options.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.opts.timeout),
                connector=aiohttp.TCPConnector(limit=self.opts.concurrency),
            )
        return self._session

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "base_url": self.opts.base_url, "model": self.model}

    async def generate(self, request: Request) -> list[Completion]:
        chat = request.messages is not None
        if self.opts.endpoint == "completions" and chat:
            raise FatalBackendError("this backend is set to the completions endpoint only")
        body = _chat_body(request) if chat else _completion_body(request)
        path = "/chat/completions" if chat else "/completions"
        if request.json_schema is not None:
            body["response_format"] = _response_format(request.json_schema,
                                                       self.opts.schema_format)
        body["model"] = self.model
        data = await self._post(path, body)
        return _parse(data, chat)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._http().post(self._base + path, json=body) as response:
                status, raw = response.status, await response.read()
                retry_after = response.headers.get("retry-after")
        except TimeoutError:
            raise RetryableError(f"timeout after {self.opts.timeout}s") from None
        except aiohttp.ClientError as exc:
            raise RetryableError(f"connection error: {type(exc).__name__}: {exc}") from None
        text = raw.decode("utf-8", "replace")
        if status == 429 or status >= 500:
            raise RetryableError(f"HTTP {status}: {text[:200]}",
                                 retry_after=_retry_after(retry_after))
        if status >= 400:
            raise FatalBackendError(f"HTTP {status}: {text[:300]}")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RetryableError(f"malformed JSON body: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise RetryableError(f"response has no choices: {str(data)[:200]}")
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _sampling(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {
        "n": request.n,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    return body


def _chat_body(request: Request) -> dict[str, Any]:
    body = {"messages": [dict(m) for m in request.messages or ()], **_sampling(request)}
    if request.logprobs:
        body["logprobs"] = True
    return body


def _completion_body(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": request.prompt, **_sampling(request)}
    if request.logprobs:
        body["logprobs"] = 1
    return body


def _response_format(schema: dict[str, Any], style: str) -> dict[str, Any]:
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True}}


def _parse(data: dict[str, Any], chat: bool) -> list[Completion]:
    usage = data.get("usage") or {}
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    out = []
    for choice in choices:
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        if not isinstance(text, str):
            raise RetryableError(f"choice without text: {str(choice)[:200]}")
        out.append(Completion(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0) // max(len(choices), 1),
            completion_tokens=int(usage.get("completion_tokens") or 0) // max(len(choices), 1),
            logprobs=_logprobs(choice.get("logprobs")),
        ))
    return out


def _logprobs(value: Any) -> list[float] | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("content"), list):
        return [float(t["logprob"]) for t in value["content"]]
    if isinstance(value.get("token_logprobs"), list):
        return [float(x) for x in value["token_logprobs"] if x is not None]
    return None


def _retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(header) if header else None
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None
