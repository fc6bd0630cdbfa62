"""The backend contract: one async method, `generate`, plus `close()`.

A backend turns a `Request` into completions. It raises `RetryableError` or
`FatalBackendError` for failures; retries, caching, rate limits and validation
live in `synthaug.backends.client`, once, for every backend.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]


class BackendOptions(BaseModel):
    """Options every backend accepts; subclasses add their own. Unknown keys fail."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    concurrency: int = Field(8, ge=1)  # calls at once; with `adaptive`, the ceiling
    adaptive: bool = True  # AIMD limit under `concurrency` (False: always `concurrency`)
    max_outage: float = Field(300.0, gt=0)  # seconds a call waits for a down endpoint
    max_retries: int = Field(4, ge=0)
    timeout: float = Field(600.0, gt=0)  # seconds for a whole request
    connect_timeout: float = Field(10.0, gt=0)  # seconds to open a connection
    idle_timeout: float = Field(30.0, gt=0)  # seconds without a byte while a reply streams
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    chat_template: str | None = None  # Jinja chat template, when the server does not say


@dataclass(frozen=True)
class Request:
    """One generation request: chat `messages` or a raw `prompt`, never both."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives per generated token, with their logprobs

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request needs exactly one of messages or prompt")

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form used for cache keys and prompt hashes (without `n`)."""
        return {
            "messages": [dict(m) for m in self.messages] if self.messages else None,
            "prompt": self.prompt,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
            "json_schema": self.json_schema,
            "logprobs": self.logprobs,
            **({"top_logprobs": self.top_logprobs} if self.top_logprobs else {}),
        }


@dataclass
class Completion:
    """One sampled completion."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # part of completion_tokens, where the backend reports them
    logprobs: list[float] | None = None
    # per generated token, the most likely tokens there and their logprobs (when asked)
    top_logprobs: list[dict[str, float]] | None = None
    seed: int | None = None  # the seed of the request that produced it (retries reseed)
    model: str | None = None  # the pool member that wrote it (None: the role's one model)
    backend: str | None = None  # that member's backend kind
    cached: bool = field(default=False, compare=False)
    # False: the server reported no token usage (the token counts are 0, not measured)
    usage_known: bool = field(default=True, compare=False)


BackendOptionsT = TypeVar("BackendOptionsT", bound=BackendOptions)


class Backend(ABC, Generic[BackendOptionsT]):
    """An LLM that answers requests; `options` is an instance of `Options`. Capabilities are
    class attributes."""

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    raw_completion: ClassVar[bool] = False
    json_schema: ClassVar[bool] = False
    logprobs: ClassVar[bool] = False
    options: BackendOptionsT

    def __init__(self, options: BackendOptions) -> None:
        self.options = cast(BackendOptionsT, options)

    @property
    def model(self) -> str:
        """The model name recorded in provenance and cache keys."""
        return self.options.model or "default"

    @property
    def chat_template(self) -> str | None:
        """The model's chat template, when the backend knows it (or was told)."""
        return self.options.chat_template

    def supports(self, capability: str) -> bool:
        """Whether the backend has `capability` (raw_completion, json_schema, logprobs)."""
        return bool(getattr(self, capability, False))

    def identity(self) -> dict[str, Any]:
        """What distinguishes this backend's answers; never secrets, never loads weights.

        Subclasses add where the answers come from (endpoint, model file)."""
        ident: dict[str, Any] = {"backend": self.name, "model": self.model}
        if self.options.chat_template:
            ident["chat_template"] = short_sha(self.options.chat_template)
        return ident

    @abstractmethod
    async def generate(self, request: Request) -> list[Completion]:
        """Return `request.n` completions, or raise a BackendError."""

    async def close(self) -> None:
        """Release resources (connections, model memory)."""

    def summary(self) -> dict[str, Any]:
        """The backend's own counters for the manifest (an endpoint pool's servers)."""
        return {}


def short_sha(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


AnyBackend = Backend[Any]


def sampling_fields(request: Request) -> dict[str, Any]:
    """The sampling fields OpenAI-shaped APIs share (n, temperature, top_p, max_tokens, and
    stop and seed when set)."""
    found: dict[str, Any] = {"n": request.n, "temperature": request.temperature,
                             "top_p": request.top_p, "max_tokens": request.max_tokens}
    if request.stop:
        found["stop"] = list(request.stop)
    if request.seed is not None:
        found["seed"] = request.seed
    return found
