"""Per-particle results of an encoder, and their latents.npz file."""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cryovae.errors import DamagedFileError, InputFileError
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
    extras : further per-particle outputs of a model (:attr:`cryovae.models.Encoding.extras`),
        name -> (n,) or (n, k) array; stored as ``extra_<name>`` in latents.npz.
    """

    z_mean: np.ndarray
    z_std: np.ndarray
    theta: np.ndarray
    center_px: np.ndarray
    psi_deg: np.ndarray
    origin_A: np.ndarray
    prob: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_pose(cls, z_mean, z_std, theta, center_px, pixel_size, prob=None, extras=None) -> Latents:
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
                   prob=None if prob is None else np.asarray(prob, np.float64),
                   extras={k: np.asarray(v) for k, v in (extras or {}).items()})

    def __len__(self) -> int:
        return len(self.theta)

    def take(self, idx) -> Latents:
        """The latents of particles ``idx`` (0-based int array, in the order given)."""
        idx = np.asarray(idx, dtype=np.int64)
        return Latents(z_mean=self.z_mean[idx], z_std=self.z_std[idx], theta=self.theta[idx],
                       center_px=self.center_px[idx], psi_deg=self.psi_deg[idx], origin_A=self.origin_A[idx],
                       prob=None if self.prob is None else self.prob[idx],
                       extras={k: np.asarray(v)[idx] for k, v in self.extras.items()})

    @classmethod
    def concatenate(cls, parts: list[Latents]) -> Latents:
        """The latents of ``parts`` one after the other (chunks of a stack, or the shards of a
        distributed run in rank order)."""
        if not parts:
            raise ValueError("no latents to concatenate")

        def cat(name):
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(z_mean=cat("z_mean"), z_std=cat("z_std"), theta=cat("theta"), center_px=cat("center_px"),
                   psi_deg=cat("psi_deg"), origin_A=cat("origin_A"),
                   prob=None if parts[0].prob is None else cat("prob"),
                   extras={k: np.concatenate([np.asarray(p.extras[k]) for p in parts]) for k in parts[0].extras})

    def save(self, path: Path) -> None:
        """Write latents.npz atomically (``prob`` omitted when None)."""
        path = Path(path)
        arrays = {k: getattr(self, k) for k in ("z_mean", "z_std", "theta", "center_px", "psi_deg", "origin_A")}
        if self.prob is not None:
            arrays["prob"] = self.prob
        arrays.update({f"{EXTRA}{k}": v for k, v in self.extras.items()})
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: Path) -> Latents:
        """Read a latents.npz written by :meth:`save`.

        Raises
        ------
        InputFileError
            When ``path`` does not exist.
        DamagedFileError
            When it is truncated or garbage, lacks an array, or its arrays have the wrong shapes
            or non-numeric values.
        """
        path = Path(path)
        if not path.exists():
            raise InputFileError(f"{path}: no latents file (has the run finished?)")
        try:
            with np.load(path, allow_pickle=False) as d:
                if not hasattr(d, "files"):
                    raise DamagedFileError(f"{path}: damaged latents file (a single array, not an .npz archive)")
                missing = set(_REQUIRED) - set(d.files)
                if missing:
                    raise DamagedFileError(f"{path}: damaged latents file (missing {', '.join(sorted(missing))})")
                arrays = {k: d[k] for k in d.files if k in (*_REQUIRED, "prob")}
                extras = {k[len(EXTRA):]: d[k] for k in d.files if k.startswith(EXTRA)}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
                AttributeError) as exc:
            raise DamagedFileError(f"{path}: damaged latents file, cannot be read ({type(exc).__name__}); "
                                   "it is truncated or not a cryovae latents.npz") from None
        _check_shapes(path, arrays)
        n = len(arrays["theta"])
        for k, a in extras.items():
            if a.dtype.kind not in "fiub" or a.ndim not in (1, 2) or a.shape[0] != n:
                raise DamagedFileError(f"{path}: damaged latents file ({EXTRA}{k} has shape {a.shape} and dtype "
                                       f"{a.dtype}; expected a column per particle for the {n} of theta)")
        return cls(**arrays, extras=extras)


_REQUIRED = ("z_mean", "z_std", "theta", "center_px", "psi_deg", "origin_A")
#: prefix of a model's extra per-particle outputs in latents.npz
EXTRA = "extra_"


def _check_shapes(path: Path, arrays: dict) -> None:
    """DamagedFileError unless every array is numeric with n rows: z (n, zdim), pose (n,) / (n, 2)."""
    n = np.shape(arrays["theta"])[0] if np.ndim(arrays["theta"]) == 1 else -1
    want = {"z_mean": 2, "z_std": 2, "theta": 1, "center_px": 2, "psi_deg": 1, "origin_A": 2, "prob": 1}
    for k, a in arrays.items():
        ok = (a.dtype.kind in "fiu" and a.ndim == want[k] and a.shape[0] == n
              and (k not in ("center_px", "origin_A") or a.shape[1] == 2))
        if not ok:
            raise DamagedFileError(f"{path}: damaged latents file ({k} has shape {a.shape} and dtype {a.dtype}; "
                                   f"expected {want[k]}-d numbers for the {max(n, 0)} particles of theta)")
    if arrays["z_std"].shape != arrays["z_mean"].shape:
        raise DamagedFileError(f"{path}: damaged latents file (z_std {arrays['z_std'].shape} "
                               f"differs from z_mean {arrays['z_mean'].shape})")
