"""The run manifest: resolved config, package versions, per-step counts, timings."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

PACKAGES = ("synthaug", "pydantic", "aiohttp", "llama-cpp-python", "rouge-score", "pyarrow",
            "datasets")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the output."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def read(out_dir: Path) -> dict[str, Any] | None:
    """The manifest in `out_dir`, if any."""
    path = out_dir / "manifest.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write(out_dir: Path, data: dict[str, Any]) -> Path:
    """Write the manifest atomically."""
    path = out_dir / "manifest.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
    return path
