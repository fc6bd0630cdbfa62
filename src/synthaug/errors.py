"""The exception tree of synthaug.

    SynthaugError
    ├── ConfigError          a recipe, option or CLI flag is wrong (names file, step, field)
    ├── InputError           an input record is malformed (names file, line, field)
    ├── RecordError          a record lacks a field a step needs, or holds the wrong type
    │   ├── MissingField
    │   └── WrongType
    ├── StepError            a step cannot go on (e.g. a between-rounds command failed)
    ├── MissingDependency    an optional package is needed ("pip install ...")
    ├── ParseError           a model reply could not be turned into records
    └── BackendError         an LLM call failed
        ├── RetryableError   worth trying again (429, 5xx, timeout, connection, bad body)
        └── FatalBackendError not worth trying again (4xx, unsupported capability)

Errors from libraries underneath (httpx, llama_cpp) are translated at the backend boundary.
"""

from __future__ import annotations


class SynthaugError(Exception):
    """Base class of every error synthaug raises on purpose."""


class ConfigError(SynthaugError):
    """A recipe, step option or command-line value is invalid."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        step: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.step, self.field, self.message = file, step, field, message
        where = ", ".join(
            f"{k} {v!s}" for k, v in (("file", file), ("step", step), ("field", field)) if v
        )
        super().__init__(f"{where}: {message}" if where else message)


class InputError(SynthaugError):
    """An input record is malformed; the record goes to the rejects file."""

    def __init__(
        self, message: str, *, file: str, line: int, field: str | None = None
    ) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = f"{file}:{line}" + (f" field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


class RecordError(SynthaugError):
    """A record is unfit for a step; the record goes to the rejects file with `reason`."""

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"field '{field}': {reason}")


class MissingField(RecordError, KeyError):
    """A record lacks a field a step or template needs."""

    def __init__(self, field: str) -> None:
        super().__init__(field, f"missing field '{field}'")

    def __str__(self) -> str:
        return self.reason


class WrongType(RecordError):
    """A record's field holds a value of another type than the step declares."""

    def __init__(self, field: str, expected: str, value: object) -> None:
        got = "null" if value is None else type(value).__name__
        super().__init__(field, f"field '{field}' must be {expected}, got {got}")


class StepError(SynthaugError):
    """A step cannot go on (a between-rounds command failed, a data file is unusable)."""


class MissingDependency(SynthaugError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the package '{package}': pip install 'synthaug[{extra}]'"
        )


class ParseError(SynthaugError):
    """A model reply could not be parsed into records; `raw` holds the replies."""

    def __init__(self, message: str, *, raw: list[str] | None = None) -> None:
        self.raw = raw
        super().__init__(message)


class BackendError(SynthaugError):
    """An LLM call failed."""


class RetryableError(BackendError):
    """A failure worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class FatalBackendError(BackendError):
    """A failure that retrying will not fix."""
