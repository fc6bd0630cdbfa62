"""Runs inside the sandbox: copies the inputs into the working dir, sets the resource limits,
runs main.py in a forked child and reports how the child ended on the status fd (which the
child cannot reach). Standard library only.

    python -I launch.py SPEC.json STATUS_FD
    SPEC: {"inputs": DIR | null, "limits": {name: value}, "args": [...]}
    status line: {"exit": N} | {"signal": N, "cpu": SECONDS}
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import shutil
import sys
import traceback

_LIMITS = {
    "cpu": resource.RLIMIT_CPU,
    "memory": resource.RLIMIT_AS,
    "processes": resource.RLIMIT_NPROC,
    "file_size": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
}


def _prepare(spec: dict[str, object]) -> None:
    inputs = spec.get("inputs")
    if isinstance(inputs, str):
        for name in os.listdir(inputs):
            source = os.path.join(inputs, name)
            if os.path.isdir(source):
                shutil.copytree(source, name)
            else:
                shutil.copyfile(source, name)
    limits = spec["limits"]
    assert isinstance(limits, dict)
    for name, value in limits.items():
        # CPU: the soft limit raises SIGXCPU, the hard limit a second later SIGKILL
        hard = value + 1 if name == "cpu" else value
        resource.setrlimit(_LIMITS[name], (value, hard))


def _program(args: list[str]) -> None:
    """Run main.py as __main__ the way `python main.py ARGS` would (in the forked child)."""
    sys.argv = ["main.py", *args]
    sys.path.insert(0, os.getcwd())
    try:
        runpy.run_path("main.py", run_name="__main__")
    except SystemExit:
        raise
    except BaseException as exc:  # the program's traceback, without the launcher's frames
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.endswith("main.py"):
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        sys.stderr.flush()
        os._exit(1)
    sys.exit(0)


def main() -> None:
    """Prepare, fork the program, report its end on the status fd, exit like it."""
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    status_fd = int(sys.argv[2])
    _prepare(spec)
    pid = os.fork()
    if pid == 0:
        os.close(status_fd)
        _program([str(a) for a in spec["args"]])
    _, status, usage = os.wait4(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        report: dict[str, float] = {"signal": sig, "cpu": usage.ru_utime + usage.ru_stime}
        code = 128 + sig
    else:
        code = os.WEXITSTATUS(status)
        report = {"exit": code}
    os.write(status_fd, (json.dumps(report) + "\n").encode())
    os._exit(code)


if __name__ == "__main__":
    main()
