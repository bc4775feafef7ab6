"""Atomic checkpoints: model + optimizer + scheduler + epoch + RNG + split + history."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cryovae.io.atomic import atomic_path


def model_state(model: nn.Module) -> dict:
    """The model's state dict in training mode (e2cnn adds cached filters in eval mode)."""
    was_training = model.training
    model.train()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.train(was_training)
    return state


def load_model_state(model: nn.Module, state: dict) -> None:
    """Load a :func:`model_state` dict (strict) into ``model`` and leave it in training mode."""
    model.train()
    model.load_state_dict(state)


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace`` onto ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_atomic`."""
    return torch.load(Path(path), map_location=device, weights_only=False)
