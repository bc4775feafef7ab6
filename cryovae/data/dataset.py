"""Preprocessed particles as a dataset, and the seeded sampler the trainer draws batches with."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from cryovae.errors import CryovaeError


class ParticleDataset(torch.utils.data.Dataset):
    """Preprocessed particle images (and their CTF parameters) held in memory.

    Parameters
    ----------
    images : (n, box, box) float32 preprocessed particles (the model's box).
    ctf_params : (n, 7) CTF parameters (:func:`cryovae.models.ctf_parameters`) or None.

    ``dataset[idx]`` with an integer array ``idx`` returns ``(images (B, box, box), ctf (B, 7)
    or None)``: a whole batch in one indexing (no per-item collation).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, ctf_params: np.ndarray | None = None) -> None:
        self.images = torch.as_tensor(np.asarray(images, dtype=np.float32))
        if self.images.ndim != 3 or self.images.shape[1] != self.images.shape[2]:
            raise CryovaeError(f"images must be (n, box, box), got {tuple(self.images.shape)}")
        self.ctf_params = None if ctf_params is None else torch.as_tensor(np.asarray(ctf_params, dtype=np.float32))
        if self.ctf_params is not None and len(self.ctf_params) != len(self.images):
            raise CryovaeError(f"{len(self.ctf_params)} CTF parameter rows for {len(self.images)} images")

    @property
    def box(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctf = None if self.ctf_params is None else self.ctf_params[idx]
        return self.images[idx], ctf


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
