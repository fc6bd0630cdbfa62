"""Async stream helpers: bounded concurrent mapping and queue-backed pipes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END: Any = object()


async def concurrent_map(
    stream: AsyncIterable[T], fn: Callable[[T], Awaitable[R]], limit: int
) -> AsyncIterator[R]:
    """Apply `fn` to items of `stream` with at most `limit` running or unread; yield as done.

    No barrier between batches: a new item starts the moment a result is taken.
    An exception in `fn` or in the stream is raised to the consumer.
    """
    results: asyncio.Queue[tuple[bool | None, Any]] = asyncio.Queue()
    slots = asyncio.Semaphore(limit)
    tasks: set[asyncio.Task[None]] = set()
    spawned = 0

    async def work(item: T) -> None:
        try:
            results.put_nowait((True, await fn(item)))
        except Exception as exc:
            results.put_nowait((False, exc))

    async def feed() -> None:
        nonlocal spawned
        try:
            async for item in stream:
                await slots.acquire()
                task = asyncio.create_task(work(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                spawned += 1
            results.put_nowait((None, None))
        except Exception as exc:
            results.put_nowait((False, exc))

    feeder = asyncio.create_task(feed())
    consumed, fed = 0, False
    try:
        while not fed or consumed < spawned:
            ok, value = await results.get()
            if ok is None:
                fed = True
                continue
            if not ok:
                raise value
            consumed += 1
            slots.release()
            yield value
    finally:
        feeder.cancel()
        for task in list(tasks):
            task.cancel()


async def pipe(stream: AsyncIterable[T], queue: asyncio.Queue[Any]) -> None:
    """Copy `stream` into a bounded `queue`, then an end marker (an exception is forwarded)."""
    try:
        async for item in stream:
            await queue.put(item)
    except BaseException as exc:
        # never block here: the consumer may be gone too
        while queue.full():
            queue.get_nowait()
        queue.put_nowait(_Failure(exc))
        raise
    await queue.put(_END)


async def drain(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    """Iterate a queue filled by `pipe` until its end marker."""
    while True:
        item = await queue.get()
        if item is _END:
            return
        if isinstance(item, _Failure):
            raise item.error
        yield item


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def iterate(items: list[T]) -> AsyncIterator[T]:
    """An async stream over a list."""
    for item in items:
        yield item
