"""The process group a run trains in: one process, or ``torchrun``'s N (PyTorch's own
``torch.distributed``; DistributedDataParallel wraps the model in the trainer).

``torchrun --nproc_per_node N -m cryovae train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment;
:func:`init_world` reads them, joins the group (NCCL on CUDA, gloo on CPU) and returns the
:class:`World`. Without those variables the world is the single process, and every helper here
is a no-op, so the code paths of one and many processes are the same.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cryovae.errors import CryovaeError

#: how long a process waits for the others at a collective before failing (a rank that died
#: normally ends the group sooner: torchrun stops every worker when one fails)
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """The processes of a run.

    Attributes
    ----------
    rank : this process, 0 .. size - 1 (rank 0 writes every file).
    size : number of processes.
    local_rank : this process on its node (its CUDA device index).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True for the process that writes (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: torch.device) -> torch.device:
        """This process's device: ``cuda:LOCAL_RANK`` when ``device`` is CUDA and there are
        several processes (one GPU each), else ``device``."""
        if self.distributed and device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise CryovaeError(f"process {self.rank} has local rank {self.local_rank} but this node has "
                                   f"{torch.cuda.device_count()} CUDA device(s); start at most that many per node")
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        """Wait for every process (no-op for one)."""
        if self.distributed:
            dist.barrier()

    def gather(self, value) -> list:
        """Every process's picklable ``value``, in rank order, on every process."""
        if not self.distributed:
            return [value]
        out: list = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every process (in place; returned)."""
        if self.distributed:
            work = tensor.to(_collective_device())
            dist.broadcast(work, src=0)
            tensor.copy_(work.to(tensor.device))
        return tensor


def _collective_device() -> torch.device:
    """Where collective tensors live: CUDA for NCCL, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world_from_env() -> World:
    """The :class:`World` torchrun's environment describes (one process without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise CryovaeError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (start cryovae with torchrun)") from None
    if size < 1 or not 0 <= rank < size:
        raise CryovaeError(f"RANK {rank} is not in a world of WORLD_SIZE {size}")
    return World(rank=rank, size=size, local_rank=local)


def init_world(device: torch.device) -> World:
    """Join torchrun's process group (if started by torchrun) for training on ``device``.

    Returns the :class:`World`; a second call returns the group already joined.
    """
    world = world_from_env()
    if not world.distributed:
        return world
    if not dist.is_available():
        raise CryovaeError("this PyTorch build has no torch.distributed; run one process")
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise CryovaeError("WORLD_SIZE > 1 without MASTER_ADDR: start several processes with torchrun")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(world.device(device))
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return world


def leave_world() -> None:
    """Leave the process group (at the end of a distributed command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
