"""Runs inside the sandbox: copies the inputs into the working dir, sets the resource limits,
then replaces itself with the program. Standard library only; argv is a JSON spec.

    python -I launch.py '{"inputs": DIR, "limits": {...}, "argv": [...]}'
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys

_LIMITS = {
    "cpu": resource.RLIMIT_CPU,
    "memory": resource.RLIMIT_AS,
    "processes": resource.RLIMIT_NPROC,
    "file_size": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
}


def main() -> None:
    """Prepare the working dir and limits, then exec the program."""
    spec = json.loads(sys.argv[1])
    inputs = spec.get("inputs")
    if inputs:
        for name in os.listdir(inputs):
            source = os.path.join(inputs, name)
            if os.path.isdir(source):
                shutil.copytree(source, name)
            else:
                shutil.copyfile(source, name)
    for name, value in spec["limits"].items():
        kind = _LIMITS[name]
        if name == "cpu":  # soft limit raises SIGXCPU; the hard limit a second later SIGKILL
            resource.setrlimit(kind, (value, value + 1))
        else:
            resource.setrlimit(kind, (value, value))
    argv = spec["argv"]
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
