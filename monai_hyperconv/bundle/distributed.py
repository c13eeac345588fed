"""Helpers for ``multi_gpu_train.json`` (model-zoo pattern, CPU-friendly).

``torchrun --nproc_per_node=N -m monai.bundle run --config_file "['configs/train.json','configs/multi_gpu_train.json']"``:
``init_distributed()`` starts the process group ("nccl" on CUDA, "gloo" on CPU), ``dist_device()``
gives ``cuda:LOCAL_RANK`` or ``cpu``, ``ddp(network, device)`` wraps the network, and handlers
that write files check ``is_main_process()`` so only rank 0 saves and logs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["dist_backend", "dist_device", "init_distributed", "cleanup_distributed", "is_main_process", "get_rank",
           "get_world_size", "ddp"]


def dist_backend() -> str:
    """"nccl" when CUDA is available, else "gloo"."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def dist_device() -> torch.device:
    """``cuda:LOCAL_RANK`` on a GPU machine, ``cpu`` otherwise."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> int:
    """Initialise the default process group from torchrun's environment (idempotent); returns the rank."""
    if not dist.is_initialized():
        backend = backend or dist_backend()
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(dist_device())
    return dist.get_rank()


def cleanup_distributed() -> None:
    """Destroy the process group if one is up."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 and whenever no process group is running."""
    return get_rank() == 0


def ddp(network: torch.nn.Module, device: torch.device | str | None = None, find_unused_parameters: bool = False):
    """Move ``network`` to ``device`` and wrap it in ``DistributedDataParallel`` (device_ids only on CUDA)."""
    device = torch.device(device) if device is not None else dist_device()
    network = network.to(device)
    if device.type == "cuda":
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=[device], find_unused_parameters=find_unused_parameters)
    return torch.nn.parallel.DistributedDataParallel(network, find_unused_parameters=find_unused_parameters)
