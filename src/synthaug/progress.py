"""Live progress per step (rich): records in and out, rate and ETA."""

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

    def _elapsed(self, task: TaskID) -> float:
        return self.progress.tasks[task].elapsed or 0.0

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.shown:
            self.progress.stop()
