"""Workers: where a collection's independent jobs (one fine-tune per task) run, in this process or as Ray tasks.

Both kinds take the same job function and yield each job's outcome in the order the jobs were given, so that the
caller, the zoo's single writer, appends tasks in the same order however many workers ran them (a zoo collected on
Ray is the zoo a one-process run writes). Ray runs at most `workers` jobs at once and holds at most `workers` finished
results that wait for an earlier job; a killed driver loses only those, and a resumed run redoes them.

A job that raises is reported as failed (the others go on); a Ray worker process that dies (killed, out of memory,
a lost node) is rerun up to `retries` times by Ray before its job counts as failed.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from loragen.errors import ConfigError

RAY_HINT = "Ray is not installed; install it with: pip install 'loragen[ray]'"


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray instance; "auto" or "ray://HOST:10001": join a running cluster
    workers: int | None = None  # jobs at once; None: local: CPU cores // cpus_per_task, a cluster: its CPUs // cpus_per_task
    cpus_per_task: int = 1  # CPUs Ray reserves for each job; the job's torch threads too
    retries: int = 2  # reruns of a job whose worker process died (Ray's max_retries); a job that raises is not rerun

    def __post_init__(self):
        if self.cpus_per_task < 1 or (self.workers is not None and self.workers < 1) or self.retries < 0:
            raise ConfigError(f"expected workers >= 1, cpus_per_task >= 1, retries >= 0; found {self.workers}, "
                              f"{self.cpus_per_task}, {self.retries}")


@dataclass
class Outcome:
    key: str  # the job's key (a task name)
    result: Any = None  # what the job returned; None when it failed
    error: BaseException | None = None  # why it failed


def _call(fn: Callable, threads: int | None, key: str, *shared) -> Any:
    """Run one job in a Ray worker, with the torch threads its reserved CPUs allow."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return fn(key, *shared)


class LocalWorkers:
    """Every job in this process, one after another."""

    running = 0  # jobs in progress, for progress displays

    def run(self, fn: Callable, keys: list[str], *shared) -> Iterator[Outcome]:
        for key in keys:
            self.running = 1
            try:
                out = Outcome(key, fn(key, *shared))
            except Exception as e:  # a failed job is reported; KeyboardInterrupt and the like stop the run
                out = Outcome(key, error=e)
            self.running = 0
            yield out

    def close(self) -> None:
        pass


class RayWorkers:
    """Jobs as Ray tasks on a local Ray instance (started here, stopped by close) or a running cluster."""

    def __init__(self, config: RayConfig):
        try:
            import ray
        except ImportError:
            raise ConfigError(RAY_HINT) from None
        self.ray, self.config, self.running = ray, config, 0
        self.started = not ray.is_initialized()  # a session the caller already started (tests, notebooks) is reused
        if self.started:
            if config.address is None:
                cpus = (config.workers or max(1, (os.cpu_count() or 1) // config.cpus_per_task)) * config.cpus_per_task
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=config.address, log_to_driver=False)
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        if cluster_cpus < config.cpus_per_task:
            raise ConfigError(f"each job reserves {config.cpus_per_task} CPUs; found a Ray cluster of {cluster_cpus}")
        self.workers = config.workers or max(1, cluster_cpus // config.cpus_per_task)

    def run(self, fn: Callable, keys: list[str], *shared) -> Iterator[Outcome]:
        ray, cfg = self.ray, self.config
        remote = ray.remote(num_cpus=cfg.cpus_per_task, max_retries=cfg.retries, retry_exceptions=False)(_call)
        refs = [ray.put(x) for x in shared]  # in the object store once, not once per job
        waiting, inflight, finished = deque(keys), {}, {}  # inflight: ObjectRef -> key; finished: key -> Outcome
        try:
            for key in keys:
                while key not in finished:
                    while waiting and len(inflight) < self.workers and len(inflight) + len(finished) < 2 * self.workers:
                        k = waiting.popleft()
                        inflight[remote.remote(fn, cfg.cpus_per_task, k, *refs)] = k
                    self.running = len(inflight)
                    (ready,), _ = ray.wait(list(inflight), num_returns=1)
                    k = inflight.pop(ready)
                    try:
                        finished[k] = Outcome(k, ray.get(ready))
                    except Exception as e:  # the job raised, or its worker died more than `retries` times
                        finished[k] = Outcome(k, error=e)
                self.running = len(inflight)
                yield finished.pop(key)
        finally:
            for ref in inflight:  # a stopped run (error, Ctrl-C) leaves no job behind on the cluster
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_workers(ray: RayConfig | None) -> LocalWorkers | RayWorkers:
    """Ray workers for a RayConfig, else this process."""
    return LocalWorkers() if ray is None else RayWorkers(ray)
