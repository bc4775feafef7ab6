"""Atomic checkpoints: model + optimizer + scheduler + epoch + RNG + split + history.

Checkpoints hold tensors, numbers, strings, lists and dicts only, and are read with
``torch.load(weights_only=True)``: a checkpoint from elsewhere cannot run code. A truncated or
garbage file is a :class:`cryovae.errors.DamagedFileError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cryovae.errors import DamagedFileError, InputFileError
from cryovae.io.atomic import atomic_path


def _numpy_array_globals() -> list:
    """numpy globals of the integer split arrays in checkpoints written before cryovae stored the
    split as tensors (allow-listed for ``weights_only=True``; plain arrays only)."""
    core = getattr(np, "_core", None) or np.core
    found = [getattr(core.multiarray, "_reconstruct", None), np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    found += [getattr(dtypes, n, None) for n in ("Int64DType", "Int32DType")] if dtypes else []
    return [g for g in found if g is not None]


def _weights_only_load(path: Path, device):
    safe = getattr(torch.serialization, "safe_globals", None)
    if safe is None:  # torch < 2.5
        return torch.load(path, map_location=device, weights_only=True)
    with safe(_numpy_array_globals()):
        return torch.load(path, map_location=device, weights_only=True)


def model_state(model: nn.Module) -> dict:
    """The model's state dict in training mode (e2cnn adds cached filters in eval mode)."""
    was_training = model.training
    model.train()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.train(was_training)
    return state


def load_model_state(model: nn.Module, state: dict, path: Path | str | None = None) -> None:
    """Load a :func:`model_state` dict (strict) into ``model`` and leave it in training mode.

    ``path`` (the checkpoint it came from) names the file when the weights do not fit the model
    (:class:`DamagedFileError`).
    """
    model.train()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        where = f"{path}: " if path is not None else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedFileError(f"{where}damaged checkpoint: its weights do not fit the run's model "
                               f"(config.yaml) ({first[:120]})") from None


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace`` onto ``path``.

    The checkpoint is serialised in memory and written with one plain file write, so a full disk
    is an :class:`OSError` (turned into one line by :func:`cryovae.io.atomic.atomic_path`)
    rather than torch's RuntimeError, and the old ``path`` stays intact.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())


def load_checkpoint(path: Path, device: torch.device | str = "cpu", keys: Iterable[str] = ("model",)) -> dict:
    """Read a checkpoint written by :func:`save_atomic` with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : the ``.pt`` file.
    device : where tensors are mapped.
    keys : entries the checkpoint must have (a missing one means a damaged file).

    Raises
    ------
    InputFileError
        When ``path`` does not exist.
    DamagedFileError
        When it is truncated, garbage, not a dict or lacks one of ``keys``.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such checkpoint")
    try:
        obj = _weights_only_load(path, device)
    except PermissionError:
        raise  # unreadable, not damaged: the command line names the file
    except (OSError, pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            KeyError, IndexError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DamagedFileError(f"{path}: damaged checkpoint, cannot be read ({type(exc).__name__}); "
                               "it is truncated or not a cryovae checkpoint") from None
    if not isinstance(obj, dict):
        raise DamagedFileError(f"{path}: damaged checkpoint (holds a {type(obj).__name__}, not a dict)")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DamagedFileError(f"{path}: damaged checkpoint (missing {', '.join(missing)})")
    if "model" in obj and not isinstance(obj["model"], dict):
        raise DamagedFileError(f"{path}: damaged checkpoint (its model entry is not a state dict)")
    return obj
