"""One process of the SD-4 test: our ``sync_batch`` norm on this rank's half of a batch (gloo, CPU).

A module of its own so spawned processes import only torch and normexp.norms, not the test modules.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

BATCH, CHANNELS = 3, 4  # per process


def inputs(world: int = 2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(world * BATCH, CHANNELS, 5, 2, generator=g) * 2 + 1
    return x, torch.randn(x.shape, generator=g)


def worker(rank: int, world: int, out_dir: str) -> None:
    from normexp.norms import create_norm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        layer = create_norm("sync_batch", CHANNELS)
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(CHANNELS, generator=g) * 0.5 + 1.0)
            layer.bias.copy_(torch.randn(CHANNELS, generator=g) * 0.5)
        x, r = inputs(world)
        part = slice(rank * BATCH, (rank + 1) * BATCH)
        x = x[part].clone().requires_grad_()
        out = layer(x)
        (out * r[part]).sum().backward()
        torch.save({"out": out.detach(), "x_grad": x.grad, "running_mean": layer.running_mean,
                    "running_var": layer.running_var, "weight_grad": layer.weight.grad,
                    "bias_grad": layer.bias.grad}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def population_net():
    """Two ``sync_batch`` layers in a conv net (fixed weights), for population statistics over processes."""
    from torch import nn

    from normexp.norms import create_norm

    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), create_norm("sync_batch", 3), nn.ReLU(),
                        nn.Conv2d(3, 4, 3, padding=1), create_norm("sync_batch", 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 0.5)
    return net


def population_batches(world: int = 1, rank: int = 0) -> list[torch.Tensor]:
    """Three global batches of 8 (shifted apart), or this rank's part of each."""
    g = torch.Generator().manual_seed(4)
    whole = [torch.randn(8, 2, 4, 4, generator=g) * 2 + k for k in range(3)]
    n = 8 // world
    return [x[rank * n:(rank + 1) * n] for x in whole]


def population_worker(rank: int, world: int, out_dir: str) -> None:
    from normexp.norms import recompute_running_stats

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        for estimator in ("ioffe", "precise"):
            net = population_net()
            recompute_running_stats(net, population_batches(world, rank), [net[1], net[4]], estimator)
            torch.save(net.state_dict(), f"{out_dir}/population_{estimator}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()
