"""Keeping secrets out of what is published: a scrubbed manifest, and a last check of every
byte that leaves for the values of the token and of secret-looking environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from synthaug.errors import ConfigError

# option names that hold a secret (`*_env` names a variable and is kept; `*_tokens` counts)
SECRET_NAME = re.compile(r"api[-_]?key|secret|passw(or)?d|authorization|bearer|credential"
                         r"|cookie|(^|[-_])token$", re.IGNORECASE)
SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s\"']*@", re.IGNORECASE)
_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^?\s\"']*)\?[^\s\"']*", re.IGNORECASE)
_LOCAL_PATH = re.compile(r"^(~|[A-Za-z]:)?[/\\]\S+$")  # an absolute path: who, where
MIN_SECRET = 8  # shorter values are too common to search for


def scrub(value: Any) -> Any:
    """A copy without secret-named keys, URL credentials or URL queries; absolute local
    paths (who ran it, where) are cut to their file name."""
    if isinstance(value, Mapping):
        kept = {}
        for key, item in value.items():
            name = str(key)
            if SECRET_NAME.search(name) and not name.lower().endswith("_env"):
                continue
            kept[key] = scrub(item)
        return kept
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        if _LOCAL_PATH.match(value):
            return re.split(r"[/\\]", value)[-1]
        return _QUERY.sub(r"\1", _USERINFO.sub(r"\1", value))
    return value


def secret_values(token: str | None, environ: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
    """Name -> value of what must never be uploaded: the token and every environment
    variable whose name looks secret."""
    env = os.environ if environ is None else environ
    found = {name: value for name, value in env.items()
             if SECRET_ENV.search(name) and len(value) >= MIN_SECRET}
    if token:
        found["the Hub token"] = token
    return found


def check_clean(blobs: Iterable[tuple[str, bytes | Path]], secrets: Mapping[str, str],
                chunk: int = 1 << 20) -> None:
    """Raise naming the file and the secret if any blob holds a secret's value."""
    needles = {name: value.encode() for name, value in secrets.items()}
    if not needles:
        return
    overlap = max(len(n) for n in needles.values())
    for label, blob in blobs:
        for part in _chunks(blob, chunk, overlap):
            for name, needle in needles.items():
                if needle in part:
                    raise ConfigError(f"refusing to upload: it holds the value of {name}",
                                      file=label)


def _chunks(blob: bytes | Path, size: int, overlap: int) -> Iterable[bytes]:
    if isinstance(blob, bytes):
        yield blob
        return
    tail = b""
    with blob.open("rb") as handle:
        while block := handle.read(size):
            yield tail + block
            tail = block[-overlap:]
