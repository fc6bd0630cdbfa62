"""What every command shares: exit codes, and one clear line for any error a user can cause.

    0    every input record produced its outputs
    1    the run stopped on an error after it started (manifest status `failed`)
    2    usage or configuration error, found before any call or file change
    3    the run finished with failures or rejects (manifest status `partial`)
    4    the run stopped at its --max-tokens / --max-cost budget (status `budget_exhausted`)
    130  interrupted (Ctrl-C; manifest status `interrupted`): rerun to resume
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from synthaug.errors import SynthaugError

OK, FAILED, USAGE, PARTIAL, BUDGET_SPENT, INTERRUPTED = 0, 1, 2, 3, 4, 130
RESUME = "interrupted: rerun the same command to resume"


def status_code(status: str) -> int:
    """The exit code of a run that ended with `status`."""
    return {"complete": OK, "partial": PARTIAL, "budget_exhausted": BUDGET_SPENT,
            "interrupted": INTERRUPTED}.get(status, FAILED)


@contextmanager
def user_errors(console: Console, started: Callable[[], bool] = lambda: False,
                interrupted: str = RESUME) -> Iterator[None]:
    """Turn a SynthaugError, an OS error or Ctrl-C into one line and an exit code.

    `started` tells whether the run got past validation: an error before is a usage error
    (2), an error after stopped a run (1).
    """
    try:
        yield
    except KeyboardInterrupt:
        console.print(interrupted, soft_wrap=True)
        raise typer.Exit(INTERRUPTED) from None
    except (SynthaugError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(FAILED if started() else USAGE) from None
