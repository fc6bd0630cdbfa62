"""Live progress per step (rich): records in and out, rate and ETA; per backend role, the
calls made and the in-flight limit with the reason it last changed."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from synthaug.backends.pool import AnyClient, PoolClient
from synthaug.executors.local import RunState


class ProgressView:
    """One bar per step; totals follow the input count, then the previous step's output.

    The bars appear with the first update, which comes once the run has passed validation:
    a run refused up front prints only its error.
    """

    def __init__(self, console: Console, labels: list[str]) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9} rec/s"), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.tasks: list[TaskID] = [
            self.progress.add_task(label, total=None, rate="-", info="") for label in labels]
        self.roles: dict[str, TaskID] = {}
        self.shown = False

    def update(self, state: RunState) -> None:
        """Refresh the bars from the run's counters."""
        if not self.shown:
            self.progress.start()
            self.shown = True
        total = state.total
        for task, stats in zip(self.tasks, state.steps, strict=True):
            elapsed = max(stats.seconds if stats.done else self._elapsed(task), 1e-6)
            info = f"out {stats.outputs}"
            if stats.dropped:
                info += f" drop {sum(stats.dropped.values())}"
            if stats.failures:
                info += f" fail {stats.failures}"
            self.progress.update(task, completed=stats.inputs, total=total,
                                 rate=f"{stats.inputs / elapsed:.1f}", info=info)
            total = stats.outputs if stats.done else total
        self._backends(state)

    def _backends(self, state: RunState) -> None:
        """One row per backend role: calls made, and the in-flight limit."""
        for role, client in state.clients.items():
            if role not in self.roles:
                self.roles[role] = self.progress.add_task(f"calls {role}", total=None,
                                                          rate="-", info="")
            self.progress.update(self.roles[role], completed=client.stats.calls,
                                 info=limit_text(client))

    def _elapsed(self, task: TaskID) -> float:
        return self.progress.tasks[task].elapsed or 0.0

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.shown:
            self.progress.stop()


def limit_text(client: AnyClient) -> str:
    """'limit 7/8 (429)': the in-flight limit, its ceiling and why it last changed; a pool's
    members one after the other."""
    if isinstance(client, PoolClient):
        return "; ".join(f"{name} {limit_text(member).removeprefix('limit ')}" for name, member
                         in zip(client.backend.names, client.members, strict=True))
    stats = client.stats
    return f"limit {stats.limit}/{client.concurrency} ({stats.limit_reason})"
