"""Kernel caps on a whole sandboxed process tree: a pids cgroup (how many processes at once)
and a memory cgroup (resident memory of all of them), where this machine lets us make one.

rlimits alone cannot do this: RLIMIT_NPROC is ignored for processes of the host's root user
(also inside a user namespace mapped to it), and RLIMIT_AS caps each process, not the tree.
Works with cgroup v1 controllers (pids, memory) and with a delegated cgroup v2 subtree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")


def _own(controller: str) -> Path | None:
    """This process's cgroup folder for `controller` (v1), or its v2 folder ('')."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if (controller and controller in names.split(",")) or (not controller and not names):
            base = _ROOT / controller if controller else _ROOT
            if not controller and (_ROOT / "unified").is_dir() and \
                    not (_ROOT / "cgroup.controllers").exists():
                base = _ROOT / "unified"
            return base / path.lstrip("/")
    return None


def _make(parent: Path | None, settings: dict[str, str]) -> Path | None:
    """A new child cgroup of `parent` with `settings` written, or None if not allowed."""
    if parent is None or not parent.is_dir():
        return None
    folder = parent / f"synthaug-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir()
    except OSError:
        return None
    try:
        for name, value in settings.items():
            (folder / name).write_text(value)
    except OSError:
        folder.rmdir()
        return None
    return folder


class Cgroup:
    """The cgroup folders one run joins; `kill` ends every process left in them."""

    def __init__(self, folders: list[Path], kinds: list[str]) -> None:
        self.folders, self.kinds = folders, kinds

    @classmethod
    def create(cls, processes: int, memory_bytes: int) -> Cgroup | None:
        """Caps for one run, or None when this machine gives no writable pids cgroup."""
        v1 = _make(_own("pids"), {"pids.max": str(processes)})
        if v1 is not None:
            folders, kinds = [v1], ["pids"]
            memory = _make(_own("memory"), {"memory.limit_in_bytes": str(memory_bytes)})
            if memory is not None:
                folders.append(memory)
                kinds.append("memory")
            return cls(folders, kinds)
        v2 = _make(_own(""), {"pids.max": str(processes), "memory.max": str(memory_bytes)})
        return cls([v2], ["pids", "memory"]) if v2 is not None else None

    def join_command(self) -> list[str]:
        """A shell prefix that moves itself into every folder, then execs the rest."""
        script = 'for f in $SYNTHAUG_CGROUPS; do echo $$ > "$f/cgroup.procs"; done; exec "$@"'
        return ["/bin/sh", "-c", script, "sh"]

    def env(self) -> dict[str, str]:
        """The environment the join prefix reads."""
        return {"SYNTHAUG_CGROUPS": " ".join(str(f) for f in self.folders)}

    def out_of_memory(self) -> bool:
        """True if the kernel killed a process of this run for exceeding the memory cap."""
        for folder in self.folders:
            for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
                try:
                    text = (folder / name).read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    word, _, count = line.partition(" ")
                    if word == key and count.strip() not in ("", "0"):
                        return True
        return False

    def kill(self) -> None:
        """SIGKILL every process still in the cgroups, then remove them."""
        for _ in range(50):
            left = [int(p) for f in self.folders for p in _procs(f)]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not left:
                break
            time.sleep(0.02)
        for folder in self.folders:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _procs(folder: Path) -> list[str]:
    try:
        return (folder / "cgroup.procs").read_text().split()
    except OSError:
        return []


def sweep() -> None:
    """Remove the cgroups a killed synthaug process left behind (its pid is gone)."""
    parents = {_own("pids"), _own("memory"), _own("")}
    for folder in (f for p in parents if p is not None for f in p.glob("synthaug-*-*")):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            Cgroup([folder], []).kill()
