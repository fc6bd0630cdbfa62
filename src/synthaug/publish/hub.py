"""Push a run folder to the Hugging Face Hub as a dataset repository.

One commit holds the card (README.md), the scrubbed manifest and the chosen data files,
nothing else (no side files, no cache). Before any request, every byte to upload is checked
for the token and for the values of secret-looking environment variables. The endpoint is
`HF_ENDPOINT` (read at call time) or huggingface.co.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthaug import manifest as manifests
from synthaug.errors import ConfigError, MissingDependency, SynthaugError
from synthaug.publish.card import CardOptions, build_card, validate
from synthaug.publish.files import data_files
from synthaug.publish.secrets import check_clean, scrub, secret_values

if TYPE_CHECKING:
    from huggingface_hub import HfApi

REPO_ID = re.compile(r"^([A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


class PushError(SynthaugError):
    """The Hub refused or could not be reached (the message says which and why)."""


@dataclass
class Pushed:
    """What a push did."""

    repo_url: str
    commit_url: str
    files: list[str]


@dataclass
class Upload:
    """What goes into the commit: repository path -> bytes or a local file."""

    blobs: dict[str, bytes | Path]

    def paths(self) -> list[str]:
        """The repository paths, in upload order."""
        return list(self.blobs)


def token_or_fail(given: str | None) -> str:
    """The token to use, or a clear error (never read from elsewhere: no surprise account)."""
    token = (given or "").strip()
    if not token:
        raise ConfigError("no Hugging Face token: pass --token or set HF_TOKEN to a token with "
                          "write access (https://huggingface.co/settings/tokens)",
                          field="--token")
    return token


def prepare(out: Path, repo: str, options: CardOptions, formats: Sequence[str] | None,
            card: Path | None, token: str) -> Upload:
    """Check the repository id, pick the files, build the card (or check `card`), scrub the
    manifest, and refuse if any byte holds a secret. Nothing is sent."""
    if not REPO_ID.match(repo):
        raise ConfigError(f"not a repository id: {repo!r} (NAME or OWNER/NAME)", field="--repo")
    files = data_files(out, formats)
    if not files:
        raise ConfigError("no records to push", file=str(out / "records.jsonl"))
    if card is None:  # a fresh card, uploaded only: OUT/README.md, maybe edited, is kept
        options.repo = options.repo or repo
        text = build_card(out, options, files).text
    else:
        text = card.read_text(encoding="utf-8")
        validate(text, files)
    found = manifests.read(out) or {}
    blobs: dict[str, bytes | Path] = {
        "README.md": text.encode(),
        "manifest.json": json.dumps(scrub(found), indent=2, ensure_ascii=False).encode()}
    blobs.update({f.repo_path: f.local for f in files})
    check_clean(blobs.items(), secret_values(token))
    return Upload(blobs)


def push(out: Path, repo: str, *, token: str | None, private: bool = False,
         options: CardOptions | None = None, formats: Sequence[str] | None = None,
         card: Path | None = None, message: str | None = None) -> Pushed:
    """Create the dataset repository (if needed) and upload the card, manifest and data."""
    key = token_or_fail(token)
    upload = prepare(out, repo, options or CardOptions(), formats, card, key)
    return send(upload, repo, key, private=private,
                message=message or f"Upload {out.name} with synthaug")


def send(upload: Upload, repo: str, token: str, *, private: bool, message: str) -> Pushed:
    """create_repo (exist_ok) then one create_commit of every blob."""
    api = _api(token)
    from httpx import HTTPError
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        url = api.create_repo(repo, repo_type="dataset", private=private or None,
                              exist_ok=True)
        info = api.create_commit(repo_id=url.repo_id, repo_type="dataset",
                                 operations=_operations(upload), commit_message=message)
    except (HfHubHTTPError, OfflineModeIsEnabled, HTTPError, OSError, ValueError) as exc:
        raise _translated(exc) from None  # one line at the boundary, never the token
    return Pushed(str(url), str(info.commit_url), upload.paths())


def _api(token: str) -> HfApi:
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise MissingDependency("huggingface_hub", "synthaug push", "hub") from None
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)


def _operations(upload: Upload) -> list[Any]:
    from huggingface_hub import CommitOperationAdd

    return [CommitOperationAdd(path_in_repo=path, path_or_fileobj=blob)
            for path, blob in upload.blobs.items()]


def _translated(exc: Exception) -> SynthaugError:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return PushError("HF_HUB_OFFLINE is set: unset it to push")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        hint = {401: " (is the token valid?)", 403: " (does the token have write access "
                "to this namespace?)"}.get(status if isinstance(status, int) else 0, "")
        return PushError(f"the Hub answered {status}{hint}: {_first_line(exc)}")
    return PushError(f"push failed: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]

