"""Disk spools for Global steps that must see a whole stream in bounded memory: records as
JSON lines, vectors as a raw float32 file read back through short-lived memory maps."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthaug.records import Record

if TYPE_CHECKING:
    import numpy as np


class Spool:
    """A folder of spooled records and vectors; removed by `close()`."""

    def __init__(self, parent: Path | None, label: str) -> None:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
            _sweep(parent, label)
        self.folder = Path(tempfile.mkdtemp(prefix=f"spool-{label}-{os.getpid()}-",
                                            dir=parent))
        self._records = (self.folder / "records.jsonl").open("w", encoding="utf-8",
                                                             buffering=1 << 20)
        self._vectors = (self.folder / "vectors.f32").open("wb", buffering=0)
        self.count = 0
        self.dim = 0

    def add_record(self, record: Record) -> None:
        """Append one record (kept as a JSON line until `records()` reads it back)."""
        self._records.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def add_vectors(self, matrix: np.ndarray) -> None:
        """Append rows of float32 vectors (all rows of one spool have one width)."""
        import numpy as np

        if len(matrix) == 0:
            return
        if self.dim and matrix.shape[1] != self.dim:
            raise ValueError(f"vector width {matrix.shape[1]} after {self.dim}")
        self.dim = int(matrix.shape[1])
        self._vectors.write(np.ascontiguousarray(matrix, dtype=np.float32).tobytes())

    def seal(self) -> None:
        """Flush the files: reading may start."""
        self._records.close()
        self._vectors.close()

    def _map(self) -> np.ndarray:
        import numpy as np

        rows = (self.folder / "vectors.f32").stat().st_size // (4 * self.dim)
        return np.memmap(self.folder / "vectors.f32", dtype=np.float32, mode="r",
                         shape=(rows, self.dim))

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """Copies of consecutive row blocks; each block's mapping is dropped after use, so
        the pages read do not stay in the process's resident memory."""
        import numpy as np

        start = 0
        while True:
            mapped = self._map()
            block = np.array(mapped[start:start + size])
            del mapped
            if not len(block):
                return
            yield block
            start += size

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """A copy of the given rows (sorted indices read fastest)."""
        import numpy as np

        mapped = self._map()
        block = np.array(mapped[indices])
        del mapped
        return block

    def records(self) -> Iterator[Record]:
        """The spooled records, in the order they were added."""
        with (self.folder / "records.jsonl").open(encoding="utf-8") as lines:
            for line in lines:
                record: dict[str, Any] = json.loads(line)
                yield record

    def close(self) -> None:
        """Remove the spool's files."""
        for handle in (self._records, self._vectors):
            if not handle.closed:
                handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _sweep(parent: Path, label: str) -> None:
    """Remove spools of `label` left by processes that no longer run (e.g. killed -9)."""
    for folder in parent.glob(f"spool-{label}-*"):
        pid = folder.name[len(f"spool-{label}-"):].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
