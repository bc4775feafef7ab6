"""Preprocessed particles as a dataset, the seeded sampler the trainer draws batches with, and
the DataLoader that reads those batches (in worker processes, pinned for the GPU)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cryovae.errors import CryovaeError


@dataclass(frozen=True)
class LoaderConfig:
    """How training reads the preprocessed particles (changes no result).

    Attributes
    ----------
    workers : DataLoader reader processes per training process (0: read between steps).
    lazy : read the preprocessed stack from disk batch by batch instead of holding it in memory;
        None: only when it is larger than 1 GiB (:data:`cryovae.runs.rundir.IN_MEMORY_LIMIT`).
    """

    workers: int = 0
    lazy: bool | None = None

    def validate(self) -> None:
        if self.workers < 0:
            raise CryovaeError(f"--workers must be >= 0, got {self.workers}")


class ParticleDataset(torch.utils.data.Dataset):
    """Preprocessed particle images (and their CTF parameters), in memory or on disk.

    Parameters
    ----------
    images : (n, box, box) float32 preprocessed particles (the model's box): an array held in
        memory, or rows read from disk on demand (:class:`cryovae.io.NpyRows`: a whole stack is
        never read at once).
    ctf_params : (n, 7) CTF parameters (:func:`cryovae.models.ctf_parameters`) or None.

    ``dataset[idx]`` with an integer array ``idx`` returns ``(images (B, box, box), ctf (B, 7)
    or None)``: a whole batch in one indexing (no per-item collation).
    """

    def __init__(self, images, ctf_params: np.ndarray | None = None) -> None:
        if isinstance(images, np.ndarray | torch.Tensor | list):
            self.images = torch.as_tensor(np.asarray(images, dtype=np.float32))
        else:  # rows on disk: read per batch
            self.images = images
        if len(self.images.shape) != 3 or self.images.shape[1] != self.images.shape[2]:
            raise CryovaeError(f"images must be (n, box, box), got {tuple(self.images.shape)}")
        self.ctf_params = None if ctf_params is None else torch.as_tensor(np.asarray(ctf_params, dtype=np.float32))
        if self.ctf_params is not None and len(self.ctf_params) != len(self.images):
            raise CryovaeError(f"{len(self.ctf_params)} CTF parameter rows for {len(self.images)} images")

    @property
    def box(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctf = None if self.ctf_params is None else self.ctf_params[idx]
        if self.in_memory:
            return self.images[idx], ctf
        return torch.from_numpy(np.asarray(self.images[np.asarray(idx)], dtype=np.float32)), ctf


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 64-bit seed that is a deterministic function of ``(seed, epoch, stream)``."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


class SeededSampler(torch.utils.data.Sampler[int]):
    """The particles ``indices`` in a seeded random order that changes with the epoch
    (:meth:`set_epoch`, as ``torch.utils.data.DistributedSampler``), or in their own order
    (``shuffle=False``). The order of epoch e is ``indices[randperm(n)]`` drawn from
    ``epoch_seed(seed, e, 0)``, so it depends on nothing else (a resumed run sees the same).
    """

    def __init__(self, indices: np.ndarray, seed: int, shuffle: bool = True) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed, self.shuffle, self.epoch = int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """This epoch's indices, in order."""
        if not self.shuffle:
            return self.indices
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 0))
        return self.indices[torch.randperm(len(self.indices), generator=g).numpy()]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, batch_size: int) -> list[np.ndarray]:
        """This epoch's order cut into batches of ``batch_size`` (the last may be smaller)."""
        order = self.order()
        return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]


class _Batches(torch.utils.data.Dataset):
    """Batch k of a fixed list of index batches: ``(images, ctf or None, idx)``."""

    def __init__(self, dataset: ParticleDataset, batches: list[np.ndarray]) -> None:
        self.dataset, self.batches = dataset, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        idx = self.batches[k]
        images, ctf = self.dataset[idx]
        return images, ctf, idx


def _keep(batch):
    """No collation: a batch is read whole by the dataset."""
    return batch


def batch_loader(dataset: ParticleDataset, batches: list[np.ndarray], workers: int = 0, pin_memory: bool = False,
                 prefetch: int = 4) -> torch.utils.data.DataLoader:
    """A DataLoader that yields ``(images (B, box, box), ctf (B, 7) or None, idx (B,))`` for each
    index batch of ``batches``, in that order.

    Parameters
    ----------
    workers : reader processes (0: read in this process, between steps). With workers the next
        ``prefetch`` batches per worker are read while the model trains on this one.
    pin_memory : page-locked batches (for asynchronous copies to a CUDA device).
    """
    if workers < 0:
        raise CryovaeError(f"--workers must be >= 0, got {workers}")
    return torch.utils.data.DataLoader(
        _Batches(dataset, batches), batch_size=None, shuffle=False, num_workers=int(workers),
        collate_fn=_keep, pin_memory=bool(pin_memory), prefetch_factor=int(prefetch) if workers else None,
        persistent_workers=False)
