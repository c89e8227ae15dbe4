"""Process-group helpers for data-parallel runs launched by ``torchrun`` (gloo on CPU, NCCL on CUDA).

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every helper is a no-op on a single-process context, so the same
code runs in one process unchanged. See ``docs/distributed.md``.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: global ``rank``, ``world_size`` and ``local_rank`` (on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this node

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = DistContext()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str, timeout_s: float | None = None) -> DistContext:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); single-process context (and no process group) when ``WORLD_SIZE`` is unset or 1.

    The backend is NCCL for a CUDA ``device`` (each process then uses ``cuda:LOCAL_RANK``), gloo otherwise.
    Calling it again in a process that already joined returns the same context. ``timeout_s``: how long a
    collective waits for the other ranks (torch's default when ``None``).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return SINGLE
    ctx = DistContext(
        _env_int("RANK", 0), world_size, _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", world_size)
    )
    kw = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        if cuda:
            dist.init_process_group("nccl", device_id=torch.device("cuda", ctx.local_rank), **kw)
        else:
            dist.init_process_group("gloo", **kw)
    if (dist.get_rank(), dist.get_world_size()) != (ctx.rank, ctx.world_size):
        raise RuntimeError(
            f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match the environment "
            f"(RANK={ctx.rank}, WORLD_SIZE={ctx.world_size})"
        )
    return ctx


def local_device(device: str, ctx: DistContext) -> torch.device:
    """The device this process computes on: ``cuda:LOCAL_RANK`` for a distributed CUDA run, else ``device``."""
    dev = torch.device(device)
    if ctx.distributed and dev.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return dev


def gather_objects(obj: Any, ctx: DistContext) -> list | None:
    """Pickle-gather ``obj`` from every rank: the list (in rank order) on rank 0, ``None`` elsewhere."""
    if not ctx.distributed:
        return [obj]
    out: list | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (other ranks' argument is ignored)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks (in place; returned for chaining). A CPU tensor is summed on
    the current GPU when the backend is NCCL, which reduces CUDA tensors only."""
    if not ctx.distributed:
        return values
    if dist.get_backend() == "nccl" and not values.is_cuda:
        on_gpu = values.cuda()
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        return values.copy_(on_gpu.cpu())
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def shard_bounds(n: int, ctx: DistContext) -> tuple[int, int]:
    """``[lo, hi)`` of this rank's contiguous share of ``n`` items: sizes differ by at most one, lower ranks first
    (``numpy.array_split``'s rule), so the shards in rank order are exactly the ``n`` items."""
    base, extra = divmod(n, ctx.world_size)
    lo = ctx.rank * base + min(ctx.rank, extra)
    return lo, lo + base + (1 if ctx.rank < extra else 0)


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here."""
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process or when it was never joined).

    Collects garbage first: a DistributedDataParallel wrapper left in a reference cycle can keep the gloo group (and its
    worker threads) alive past ``destroy_process_group`` until interpreter exit, where gloo aborts the process
    ("terminate called without an active exception", seen as a rare SIGABRT of one rank under load)."""
    if ctx.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
