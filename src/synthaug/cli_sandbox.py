"""`synthaug sandbox`: run a Python file in the code sandbox, or say what it enforces here.

    synthaug sandbox run FILE.py [ARGS...] [--timeout S] [--memory MB] [--output-limit BYTES]
    synthaug sandbox info

`run` prints one JSON object {status, exit_code, stdout, stderr, truncated, seconds} and exits
0 when the program exited 0 within its limits, 1 otherwise, 2 when nothing could run (no such
file, or no isolation tool on this machine and no --unsafe-local).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from synthaug.cli_common import FAILED, OK, user_errors
from synthaug.errors import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Run untrusted Python isolated (bubblewrap) with resource limits.")
console = Console(stderr=True)
UNSAFE = ("Run without isolation (resource limits only: no filesystem or network "
          "isolation) when bubblewrap cannot run here. Weaker; off by default.")


@app.command("run", context_settings={"allow_extra_args": True,
                                      "ignore_unknown_options": True})
def run(
    file: Annotated[Path, typer.Argument(help="The Python file to run (as main.py).")],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the program.")] = None,
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds.")] = 10.0,
    memory: Annotated[int, typer.Option(help="Memory in MB (per process and tree).")] = 512,
    output_limit: Annotated[int, typer.Option(help="Bytes of stdout/stderr kept.")] = 1_000_000,
    processes: Annotated[int, typer.Option(help="Processes at once.")] = 64,
    stdin: Annotated[Path | None, typer.Option(help="A file fed to standard input.")] = None,
    unsafe_local: Annotated[bool, typer.Option("--unsafe-local", help=UNSAFE)] = False,
) -> None:
    """Run FILE in a fresh sandbox and print the outcome as one JSON object."""
    from synthaug.verify.sandbox import Limits, Sandbox

    # SIGTERM ends the run like Ctrl-C: the process tree, its cgroup and folder are removed
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with user_errors(console, interrupted="interrupted: the program was killed"):
        try:
            limits = Limits(timeout=timeout, memory_mb=memory, output_limit=output_limit,
                            processes=processes)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(first["msg"], field=str(first["loc"][0])) from None
        code = file.read_text(encoding="utf-8")
        given = stdin.read_bytes() if stdin else None
        box = Sandbox(limits, unsafe_local=unsafe_local)
        result = asyncio.run(box.run(code, args or [], stdin=given))
    print(json.dumps({**result.as_dict(), "isolation": box.isolation}, ensure_ascii=False))
    raise typer.Exit(OK if result.ok else FAILED)


@app.command("info")
def info(
    unsafe_local: Annotated[bool, typer.Option("--unsafe-local", help=UNSAFE)] = False,
) -> None:
    """Print which mechanism enforces each protection on this machine (JSON)."""
    from synthaug.verify.sandbox import Sandbox, bwrap_path

    with user_errors(console):
        box = Sandbox(unsafe_local=unsafe_local)
    print(json.dumps({"bwrap": bwrap_path(), "isolation": box.isolation,
                      "enforced": box.enforced()}, indent=1))
