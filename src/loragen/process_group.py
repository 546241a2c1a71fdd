"""ProcessGroup: the data-parallel processes a training run is one of: one by default, N under `accelerate launch`.

Under `accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N` (nccl on GPUs; gloo on CPU
when the machine has no GPU: accelerate's `--cpu` flag starts one process unless MPI is set up) every process runs
the same script, and `training.train`
1. starts every process from the main process's weights (broadcast),
2. lets each step function compute its share of the step's global batch: the function draws the whole batch's indices
   from the step's generator, the same draws in every process, and keeps the slice `local(n)`, so the processes
   together compute the batch one process would,
3. averages the gradients (and the reported loss) over the processes before clipping and the optimiser step, so that
   the weights stay identical in every process (what DistributedDataParallel does, for any step function),
4. leaves writing states and results to the main process.
A process's own random draws (diffusion noise) come from `fork(g)` or the global RNG, seeded per process.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch

from loragen.errors import ConfigError


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0  # this process's index, 0 = the main process
    world: int = 1  # number of processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local(self, n: int) -> slice:
        """This process's slice of a global batch of `n` items (all of it in one process)."""
        if self.world == 1:
            return slice(0, n)
        if n % self.world:
            raise ConfigError(f"a global batch of {n} items is split over {self.world} processes; expected a multiple "
                              f"of {self.world}, found {n} (change the batch size or the number of processes)")
        k = n // self.world
        return slice(self.rank * k, (self.rank + 1) * k)

    def fork(self, g: torch.Generator) -> torch.Generator:
        """A generator for this process's own draws (noise of its samples): `g` itself in one process; with several,
        one seeded from a draw of `g` and the rank, so processes do not repeat each other's noise."""
        if self.world == 1:
            return g
        return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)) + self.rank)

    # ---- collectives (no-ops in one process) --------------------------------------------------------------------
    def average(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor, in place, by its mean over the processes (one all-reduce for all of them)."""
        if self.world == 1 or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for t in tensors:
            t.copy_(flat[i : i + t.numel()].view_as(t))
            i += t.numel()

    def broadcast(self, tensors: list[torch.Tensor]) -> None:
        """Give every process the main process's values of `tensors` (in place)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.broadcast(t.data, src=0)

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every process's value of `t` (same shape everywhere), in rank order."""
        if self.world == 1:
            return [t]
        import torch.distributed as dist

        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t.contiguous())
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


_current: ProcessGroup | None = None


def process_group() -> ProcessGroup:
    """This process's group: from the launcher's environment (WORLD_SIZE > 1: accelerate sets up torch.distributed),
    else one process."""
    global _current
    if _current is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            try:
                from accelerate import PartialState
            except ImportError:
                raise ConfigError(f"WORLD_SIZE={world}: several processes need accelerate; install it with: "
                                  "pip install accelerate") from None
            # initialises torch.distributed from the launcher's environment; without a GPU (or with --cpu): gloo on CPU
            cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
            state = PartialState(cpu=cpu)
            if state.num_processes != world:
                raise ConfigError(f"WORLD_SIZE={world}; expected accelerate to join {world} processes, found "
                                  f"{state.num_processes} ({state.distributed_type})")
            # a gloo group left to the interpreter's teardown can abort a process that finishes first ("terminate
            # called without an active exception": its threads are destroyed unjoined), failing the launch
            atexit.register(state.destroy_process_group)
            _current = ProcessGroup(state.process_index, state.num_processes)
        else:
            _current = ProcessGroup()
    return _current
