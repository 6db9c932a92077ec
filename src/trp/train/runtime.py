"""Where a run executes: device selection and (under ``torchrun``) the process group."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Runtime", "start_runtime"]


@dataclass
class Runtime:
    """``rank`` / ``world_size`` of this process (0 / 1 without torchrun); only the main
    process (rank 0) writes files and prints progress."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any_rank(self, flag: bool) -> bool:
        """``True`` on every rank if ``flag`` is ``True`` on any (so all ranks stop together)."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _select_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"run.device is {name!r} but no CUDA device is available; use 'cpu' or 'auto'.")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise ValueError(f"run.device must be auto, cpu or cuda[:N], got {name!r}.")
    return torch.device("cpu")


def _import_dynamo() -> None:
    """Import ``torch._dynamo`` (and with it ``torch.distributed.nn.functional``) before the
    process group exists.

    DistributedDataParallel imports ``torch._dynamo`` on first construction, and through it
    ``torch.distributed.nn.functional``, whose ten collectives default to ``group=group.WORLD``,
    evaluated at import. Imported after ``init_process_group``, those defaults hold the group, so
    ``destroy_process_group`` cannot free it and gloo's threads live on into interpreter exit,
    where now and then they abort a finished run ("terminate called without an active
    exception"; torch 2.13, ``tests/test_train.py::test_ddp_teardown_stops_gloo_threads``).
    Imported first, the defaults are None."""
    import torch._dynamo  # noqa: F401


def start_runtime(device: str) -> Runtime:
    """Select the device; under torchrun (``WORLD_SIZE > 1``) join the process group
    (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    selected = _select_device(device, local_rank)
    if world_size > 1:
        if selected.type == "cuda":
            torch.cuda.set_device(selected)
        _import_dynamo()
        dist.init_process_group("nccl" if selected.type == "cuda" else "gloo")
    return Runtime(selected, rank, world_size)
