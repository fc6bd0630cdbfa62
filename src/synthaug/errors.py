"""The exception tree of synthaug.

    SynthaugError
    ├── ConfigError          a recipe, option or CLI flag is wrong (names file, step, field)
    ├── InputError           an input record is malformed (names file, line, field)
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
        self.file, self.step, self.field = file, step, field
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


class MissingDependency(SynthaugError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the package '{package}': pip install 'synthaug[{extra}]'"
        )


class ParseError(SynthaugError):
    """A model reply could not be parsed into records."""


class BackendError(SynthaugError):
    """An LLM call failed."""


class RetryableError(BackendError):
    """A failure worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class FatalBackendError(BackendError):
    """A failure that retrying will not fix."""
