"""Cost measurements for comparing two ways of doing one job: interleaved wall times and peak tensor memory.

Times: the runs alternate (a, b, a, b, ...) and the median of each is kept, so that load from other processes on a
shared machine falls on both alike; a cut (how much faster b is than a) is the median of the per-round ratios.
Memory: on CPU, torch has no peak-memory counter, so the profiler's allocation events are summed in time order. The
peak is the bytes already held when the call starts (the `resident` tensors: weights, inputs) plus the highest running
total of what the call allocates and frees. On CUDA, torch.cuda.max_memory_allocated is used instead.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable

import torch
from torch import nn


def interleaved_rounds(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times (s) of each function in every round, the functions run in turn `repeats` times after `warmup`
    rounds: the i-th times of two functions were measured seconds apart, so their ratio is a paired measurement."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall time (s) of each function, the functions run in turn `repeats` times after `warmup` rounds."""
    return {k: statistics.median(v) for k, v in interleaved_rounds(fns, repeats, warmup).items()}


def paired_cut(new_s: list[float], old_s: list[float]) -> dict[str, float | int]:
    """How much less time `new` takes than `old`, 1 − new/old, from the rounds of interleaved_rounds: the median of
    the per-round cuts and their quartiles. A machine that speeds up or slows down for a while moves both times of a
    round alike; a ratio of the two medians is not paired (on 2 cores, ECM's training steps slowed by up to 15% for
    a few rounds at a time: per-round cuts 25–36%, median 33%, ratio of medians 30%)."""
    cuts = sorted(1 - n / o for n, o in zip(new_s, old_s, strict=True))
    q1, median, q3 = statistics.quantiles(cuts, n=4) if len(cuts) > 1 else cuts * 3
    return {"cut": median, "q1": q1, "q3": q3, "min": cuts[0], "max": cuts[-1], "rounds": len(cuts)}


def tensor_bytes(items: Iterable[nn.Module | torch.Tensor]) -> int:
    """Bytes of the parameters and buffers of modules, and of tensors."""
    total = 0
    for it in items:
        tensors = list(it.parameters()) + list(it.buffers()) if isinstance(it, nn.Module) else [it]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def peak_memory(fn: Callable[[], object], resident: Iterable[nn.Module | torch.Tensor] = (), device: str = "cpu") -> int:
    """Peak bytes held by tensors while `fn` runs: the resident modules / tensors plus what `fn` allocates."""
    base = tensor_bytes(resident)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return base + torch.cuda.max_memory_allocated() - start
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return base + peak
