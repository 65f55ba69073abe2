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
