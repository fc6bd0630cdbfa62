"""Run identity: what makes an output folder belong to one run.

An identity is the pipeline's (recipe, seed, id scheme, every step's resolved options, each
used backend's kind and model) plus a fingerprint of the input: its byte length and sha256.
A rerun with the same identity resumes. Input that only grew (lines appended) keeps the
identity: the first `bytes` of the file still hash the same. Anything else is another run,
refused before any call or file change, with the differences in plain words.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from synthaug.errors import ConfigError

CHUNK = 1 << 20
_DETAILED = ("steps", "backends", "input")  # compared part by part below


def fingerprint(path: Path | None) -> dict[str, Any] | None:
    """Byte length and sha256 of the input file (None without input)."""
    if path is None:
        return None
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def prefix_matches(path: Path, stored: dict[str, Any]) -> bool:
    """True if the first `stored['bytes']` bytes of `path` hash to `stored['sha256']`."""
    left = int(stored.get("bytes", -1))
    if left < 0 or path.stat().st_size < left:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while left > 0 and (chunk := handle.read(min(CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest() == stored.get("sha256")


def differences(old: dict[str, Any] | None, new: dict[str, Any],
                input_path: Path | None) -> list[str]:
    """What differs between a stored identity and this run's, in plain words."""
    if not old:
        return ["it has no run identity (written by an older synthaug, or its manifest.json "
                "is missing)"]
    found: list[str] = []
    words = {"recipe": "recipe", "seed": "seed", "id_scheme": "record id scheme",
             "id_field": "input id field"}
    for key in [*words, *sorted({*old, *new} - {*words, *_DETAILED})]:
        if old.get(key) != new.get(key):
            found.append(f"{words.get(key, key)} {_show(old.get(key))} -> "
                         f"{_show(new.get(key))}")
    found += _step_differences(old.get("steps") or {}, new.get("steps") or {})
    found += _backend_differences(old.get("backends") or {}, new.get("backends") or {})
    found += _input_differences(old.get("input"), new.get("input"), input_path)
    return found


def _step_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    found = [f"step '{name}' removed" for name in old if name not in new]
    found += [f"step '{name}' added" for name in new if name not in old]
    if not found and list(old) != list(new):
        found.append("steps reordered")
    for name in (n for n in new if n in old and old[n] != new[n]):
        before, after = old[name], new[name]
        if before.get("use") != after.get("use"):
            found.append(f"step '{name}' kind {_show(before.get('use'))} -> "
                         f"{_show(after.get('use'))}")
            continue
        changed = _changed_keys(before.get("with") or {}, after.get("with") or {})
        found.append(f"step '{name}' options ({', '.join(changed)})" if changed
                     else f"step '{name}' options")
    return found


def _backend_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    found = [f"backend '{role}' no longer used" for role in old if role not in new]
    found += [f"backend '{role}' newly used" for role in new if role not in old]
    for role in (r for r in new if r in old and old[r] != new[r]):
        before, after = old[role], new[role]
        for key in sorted({*before, *after}):
            if before.get(key) != after.get(key):
                found.append(f"backend '{role}' {key}: {_show(before.get(key))} -> "
                             f"{_show(after.get(key))}")
    return found


def _input_differences(old: dict[str, Any] | None, new: dict[str, Any] | None,
                       input_path: Path | None) -> list[str]:
    if old is None and new is None:
        return []
    if old is None:
        return ["the earlier run had no input file"]
    if new is None or input_path is None:
        return ["the earlier run had an input file, this one has none"]
    if new == old or prefix_matches(input_path, old):
        return []
    return ["input file content differs (only appending lines keeps a run resumable)"]


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    found: list[str] = []
    for key in sorted({*old, *new}):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            found += _changed_keys(before, after, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key}: {_show(before)} -> {_show(after)}")
    return found


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) \
        else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check(out_dir: Path, stored: dict[str, Any] | None, new: dict[str, Any],
          input_path: Path | None) -> None:
    """Raise ConfigError if `out_dir` holds another run's output (nothing is touched)."""
    found = differences(stored, new, input_path)
    if found:
        raise ConfigError(
            f"{out_dir} holds the output of a different run: " + "; ".join(found)
            + ". Use --overwrite to replace it, or another --out")
