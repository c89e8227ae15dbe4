"""Process-group helpers: sharding rule, single-process no-ops, and a real 2-process gloo group."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
    shard_bounds,
    shutdown,
)


@pytest.mark.parametrize("n", [0, 1, 5, 64, 65, 127])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_the_items_in_order_with_sizes_differing_by_at_most_one(n, world):
    bounds = [shard_bounds(n, DistContext(r, world, r)) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_single_process_context_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert ctx == DistContext(0, 1, 0) and ctx.is_main and not ctx.distributed
    assert gather_objects({"a": 1}, ctx) == [{"a": 1}]
    assert broadcast_object(3, ctx) == 3
    t = torch.ones(2)
    assert torch.equal(all_reduce_sum(t, ctx), torch.ones(2))
    barrier(ctx)
    shutdown(ctx)
    assert not torch.distributed.is_initialized()


def test_bad_world_size_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        init_distributed("cpu")


def _worker(rank: int, world: int, port: int, queue) -> None:
    import os

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    ctx = init_distributed("cpu")
    try:
        gathered = gather_objects(("rank", ctx.rank), ctx)
        told = broadcast_object(f"from {ctx.rank}", ctx)
        total = all_reduce_sum(torch.tensor([float(ctx.rank + 1)]), ctx)
        barrier(ctx)
        queue.put((ctx.rank, ctx.is_main, gathered, told, float(total)))
    finally:
        shutdown(ctx)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_group_gathers_broadcasts_and_sums():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results[0] == (0, True, [("rank", 0), ("rank", 1)], "from 0", 3.0)
    assert results[1] == (1, False, None, "from 0", 3.0)
