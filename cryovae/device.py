"""Choose the torch device once, from the user's ``--device`` string (the bottom layer: any
layer may ask for a device)."""

from __future__ import annotations

import torch

from cryovae.errors import CryovaeError

#: particles a CPU takes through the generator at once (training steps in micro-batches,
#: refinement in batches of this size): the activations of 32 particles at 40 px (about 20 MB)
#: stay in a 32-MB L3 cache; a 64-particle training step ran at 119 instead of 73 particles/s on
#: the 2-core development machine when split in two (``benchmarks/train_throughput.py``)
CPU_BATCH = 32


def cpu_batch(device: torch.device, batch_size: int) -> int:
    """``batch_size``, at most :data:`CPU_BATCH` on a CPU."""
    return min(batch_size, CPU_BATCH) if torch.device(device).type == "cpu" else batch_size


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> device.

    Raises CryovaeError for an unknown spec or a CUDA device that is not available.
    """
    if isinstance(spec, torch.device):
        return spec
    s = str(spec).strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise CryovaeError(f"--device {spec}: CUDA is not available on this machine")
        if ":" in s:
            try:
                index = int(s.split(":", 1)[1])
            except ValueError:
                raise CryovaeError(f"--device {spec}: expected cuda:N with an integer N") from None
            if not 0 <= index < torch.cuda.device_count():
                raise CryovaeError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
            return torch.device("cuda", index)
        return torch.device("cuda")
    raise CryovaeError(f"--device {spec!r}: choose auto, cpu, cuda or cuda:N")
