"""Dynamic batching across requests: requests that arrive within `max_wait_s` of the first
waiting one (up to `max_batch` records) run as one batch, on one worker thread, so
concurrent clients share forward passes instead of queueing behind a lock. A batch waits
only while other requests are on their way (`incoming`), so a lone client pays no wait;
requests that arrive while a batch runs form the next one. FastAPI has no batching of its
own; this is the one queue the server adds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Batcher:
    """`await submit(items)` returns `run(items)`'s results for those items, computed in a
    batch with whatever else was submitted meanwhile. Start with `start()`, stop with `close()`."""

    def __init__(self, run: Callable[[list[Any]], list[Any]], max_batch: int = 32, max_wait_s: float = 0.020) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_s at least 0")
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches: list[int] = []
        """Items per `run` call, in order (what the model was given)."""
        self.incoming = 0
        """Requests on their way to `submit` (being read or tokenized): only while some are,
        or the queue holds more, does a batch wait for company; a lone request runs at once."""
        self._queue: asyncio.Queue[tuple[list[Any], asyncio.Future[list[Any]]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reprotune-batch")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Finish what is queued, then stop (graceful shutdown)."""
        if self._queue is not None and self._task is not None:
            await self._queue.join()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, items: list[Any]) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        carry: tuple[list[Any], asyncio.Future[list[Any]]] | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            waiting, count = [first], len(first[0])
            deadline = time.monotonic() + self.max_wait_s
            while count < self.max_batch:
                try:
                    if queue.empty():
                        left = deadline - time.monotonic()
                        if left <= 0 or self.incoming == 0:
                            break
                        entry = await asyncio.wait_for(queue.get(), left)
                    else:
                        entry = queue.get_nowait()
                except asyncio.TimeoutError:
                    break
                if count + len(entry[0]) > self.max_batch:
                    carry = entry  # it starts the next batch
                    break
                waiting.append(entry)
                count += len(entry[0])
            await self._run(waiting, loop)

    async def _run(self, waiting: list[tuple[list[Any], asyncio.Future[list[Any]]]], loop: Any) -> None:
        live = [(items, future) for items, future in waiting if not future.cancelled()]
        try:
            if live:
                flat = [item for items, _ in live for item in items]
                self.batches.append(len(flat))
                try:
                    results = await loop.run_in_executor(self._executor, self.run, flat)
                except Exception as exc:
                    if len(live) == 1:
                        if not live[0][1].done():
                            live[0][1].set_exception(exc)
                        return
                    for one in live:  # one request's bad record must not fail its batch-mates
                        await self._run_alone(one, loop)
                else:
                    start = 0
                    for items, future in live:
                        if not future.done():
                            future.set_result(results[start : start + len(items)])
                        start += len(items)
        finally:
            if self._queue is not None:
                for _ in waiting:
                    self._queue.task_done()

    async def _run_alone(self, entry: tuple[list[Any], asyncio.Future[list[Any]]], loop: Any) -> None:
        items, future = entry
        self.batches.append(len(items))
        try:
            results = await loop.run_in_executor(self._executor, self.run, items)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(results)
