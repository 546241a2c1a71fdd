"""MicroBatcher: concurrent predict requests grouped into one forward pass.

A worker takes the first waiting request, then keeps taking requests until the batch holds `max_batch` samples or
`max_wait_s` has passed since the first arrived, and hands the group to `run` on the model thread. The queue is
bounded: a request that finds it full is refused (429) instead of waiting without bound. If a group's forward fails,
each of its requests runs alone, so only the one at fault gets the error and the others get their own answers.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import torch

from loragen.errors import RequestError


@dataclass
class Job:
    """One predict request: its adapter and inputs (N, ...), and the future its logits (N, C) arrive in."""

    adapter_id: str
    adapter: object  # an Adapter
    x: torch.Tensor | list  # (N, ...) model inputs (a causal LM's: N prompts' token ids)
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """`run(jobs) -> [logits (N_j, C) per job]` is called on `executor` with up to `max_batch` samples (at most one
    request when `group` is False: the one-at-a-time baseline)."""

    def __init__(self, run: Callable[[list[Job]], list[torch.Tensor]], executor: Executor, max_batch: int, max_wait_s: float,
                 queue_size: int, metrics=None, group: bool = True):
        self.run, self.executor, self.metrics, self.group = run, executor, metrics, group
        self.max_batch, self.max_wait_s, self.queue_size = max_batch, max_wait_s, queue_size
        self._queue: asyncio.Queue[Job] | None = None
        self._carry: Job | None = None  # a request that did not fit the last batch: first of the next
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.queue_size)
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def submit(self, adapter_id: str, adapter, x: torch.Tensor | list) -> tuple[torch.Tensor, int]:
        """Logits (N, C) of `x` under `adapter` and the number of samples in the batch that computed them; raises
        RequestError(429) when the queue is full."""
        job = Job(adapter_id, adapter, x, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            if self.metrics:
                self.metrics.rejected.inc()
            raise RequestError(f"expected at most {self.queue_size} queued predict requests; found the queue full, "
                               f"retry shortly", 429) from None
        self._depth()
        return await job.future

    def _depth(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(self._queue.qsize())

    async def _next_batch(self) -> list[Job]:
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        jobs, samples = [first], len(first.x)
        deadline = first.queued_at + self.max_wait_s
        while self.group and samples < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if samples + len(job.x) > self.max_batch:
                self._carry = job
                break
            jobs.append(job)
            samples += len(job.x)
        self._depth()
        return [j for j in jobs if not j.future.done()]  # a client that went away needs no answer

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            if not jobs:
                continue
            samples = sum(len(j.x) for j in jobs)
            try:
                outs = await loop.run_in_executor(self.executor, self.run, jobs)
                results = [(j, o, None, samples) for j, o in zip(jobs, outs)]
            except Exception:  # isolate the failing request: every request of the group runs alone
                results = []
                for j in jobs:
                    try:
                        (o,) = await loop.run_in_executor(self.executor, self.run, [j])
                        results.append((j, o, None, len(j.x)))
                    except Exception as e:
                        results.append((j, None, e, len(j.x)))
            if self.metrics:
                self.metrics.batch_samples.observe(samples)
                self.metrics.batch_requests.observe(len(jobs))
            for j, o, e, n in results:
                if j.future.done():
                    continue
                if e is not None:
                    j.future.set_exception(e)
                else:
                    j.future.set_result((o, n))
