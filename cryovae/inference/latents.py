"""Per-particle results of an encoder, and their latents.npz file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryovae.errors import InputFileError
from cryovae.geometry import internal_to_relion
from cryovae.io.atomic import atomic_path


@dataclass(frozen=True)
class Latents:
    """Posterior summaries of n particles.

    Attributes
    ----------
    z_mean, z_std : (n, zdim) content posterior mean and std.
    theta : (n,) rotation in radians, internal convention (:mod:`cryovae.geometry`).
    center_px : (n, 2) particle centre (cx, cy) in model pixels, internal convention.
    psi_deg : (n,) RELION rlnAnglePsi, degrees in (-180, 180].
    origin_A : (n, 2) RELION rlnOriginXAngst / YAngst (= -center_px * pixel size).
    prob : (n,) TARGET-VAE probability q(t, r | y) of the chosen cell, or None (spatial-VAE).
    """

    z_mean: np.ndarray
    z_std: np.ndarray
    theta: np.ndarray
    center_px: np.ndarray
    psi_deg: np.ndarray
    origin_A: np.ndarray
    prob: np.ndarray | None = None

    @classmethod
    def from_pose(cls, z_mean, z_std, theta, center_px, pixel_size, prob=None) -> Latents:
        """Build from internal-convention pose; psi/origin derived with internal_to_relion.

        pixel_size : Å per model pixel of the images encoded, a float or (n,) per particle
            (particles of optics groups at different pixel sizes); ``origin_A = -center_px *
            pixel_size``.
        """
        theta = np.asarray(theta, dtype=np.float64)
        center_px = np.asarray(center_px, dtype=np.float64).reshape(-1, 2)
        apix = np.asarray(pixel_size, dtype=np.float64)
        if apix.ndim == 1 and apix.shape != theta.shape:
            raise ValueError(f"pixel_size has shape {apix.shape}, expected () or {theta.shape}")
        if apix.ndim > 1:
            raise ValueError(f"pixel_size has shape {apix.shape}, expected () or {theta.shape}")
        psi, origin_px = internal_to_relion(theta, center_px)
        return cls(z_mean=np.asarray(z_mean, np.float32), z_std=np.asarray(z_std, np.float32),
                   theta=theta, center_px=center_px, psi_deg=psi,
                   origin_A=origin_px * (apix[:, None] if apix.ndim == 1 else apix),
                   prob=None if prob is None else np.asarray(prob, np.float64))

    def __len__(self) -> int:
        return len(self.theta)

    def save(self, path: Path) -> None:
        """Write latents.npz atomically (``prob`` omitted when None)."""
        path = Path(path)
        arrays = {k: getattr(self, k) for k in ("z_mean", "z_std", "theta", "center_px", "psi_deg", "origin_A")}
        if self.prob is not None:
            arrays["prob"] = self.prob
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: Path) -> Latents:
        """Read a latents.npz written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise InputFileError(f"{path}: no latents file (has the run finished?)")
        with np.load(path) as d:
            missing = {"z_mean", "z_std", "theta", "center_px", "psi_deg", "origin_A"} - set(d.files)
            if missing:
                raise InputFileError(f"{path}: missing keys {', '.join(sorted(missing))}")
            return cls(**{k: d[k] for k in d.files})
