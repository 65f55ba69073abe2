"""Multi-process data-parallel training (``train.world_size > 1``, or ``torchrun``): one process per device,
DDP gradients.

``launch`` spawns the processes for ``train.world_size``; under ``torchrun --nproc_per_node=N`` the processes
exist already and ``join_torchrun`` joins the group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; normexp-train then sets ``train.world_size=N``). Either way
each process is in a process group (gloo on CPU, nccl on GPUs) and runs the same ``normexp.train.run``.
Every process draws the same global batch (the order is a function of seed and step) and trains on its
slice, so ``data.batch_size`` is the global batch. BN layers see their own slice, as on unsynchronized
devices; ``norm=sync_batch`` computes statistics over all of them. Process 0 writes the records, evaluates and
checkpoints; training losses are averaged over processes before they are logged.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from normexp.records import SUMMARY, read_json


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def shard(x: torch.Tensor) -> torch.Tensor:
    """This process's slice of a global batch."""
    return x.chunk(world_size())[rank()] if active() else x


def mean_over_processes(values: list[float], device: torch.device) -> list[float]:
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def first_over_processes(step: int, device: torch.device) -> int:
    """The smallest non-negative step over processes (-1: none), so every process stops at the same step."""
    if not active():
        return step
    big = 2**62
    t = torch.tensor(big if step < 0 else step, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return -1 if t.item() == big else int(t.item())


def torchrun_world() -> int:
    """The number of processes torchrun (torch.distributed.run) started; 0 when not started by it."""
    return int(os.environ["WORLD_SIZE"]) if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ else 0


def join_torchrun() -> None:
    """Join torchrun's process group (``env://``): gloo for CPU tensors, and NCCL for CUDA ones with this
    process's device (its ``LOCAL_RANK``) when there are GPUs."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")


def from_rank0(value):
    """Process 0's ``value`` in every process (a picklable object)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, run, world: int, port: int, config_yaml: str, run_dir: str, choices, overrides):
    cuda = torch.cuda.is_available() and OmegaConf.create(config_yaml).device != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=local_rank, world_size=world)
    try:
        cfg = OmegaConf.create(config_yaml)
        if not cuda and int(cfg.train.threads) == 0:  # processes share the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        run(cfg, run_dir, choices=choices, overrides=overrides)
    finally:
        dist.destroy_process_group()


def launch(run, cfg, run_dir: Path, choices=None, overrides=None) -> dict:
    """Run ``cfg`` with ``run`` (``normexp.train.run``, passed in by name: this module sits below train) in
    ``train.world_size`` processes; return process 0's summary."""
    world = int(cfg.train.world_size)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    mp.spawn(_worker, nprocs=world, join=True,
             args=(run, world, _free_port(), config_yaml, str(run_dir), choices, overrides))
    return read_json(Path(run_dir) / SUMMARY)
