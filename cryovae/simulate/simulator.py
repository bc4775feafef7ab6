"""Simulated particle stacks with known conformation, pose, defocus and noise.

Image formation for particle i (see :mod:`cryovae.geometry`)::

    clean_i(p)  = template_{conf_i}(R(theta_i) (p - c_i))         projection, no CTF, no noise
    signal_i    = CTF_i * clean_i                                   (Fourier space; when ctf=True)
    image_i     = signal_i + N(0, sigma^2),  sigma^2 = mean_i var_box(signal_i) / snr

The truth is recorded in RELION's convention (``psi_deg``, ``origin_x_A``, ``origin_y_A`` via
:func:`cryovae.geometry.internal_to_relion`), so
``apply_relion_alignment(clean_i, psi_i, origin_i / pixel_size)`` is the canonical image
``template_{conf_i}`` (:meth:`SimulatedParticles.canonical_images`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cryovae.errors import CryovaeError
from cryovae.geometry import internal_to_relion
from cryovae.simulate.config import SimulationConfig
from cryovae.simulate.ctf import apply_ctf, ctf_2d
from cryovae.simulate.molecules import (
    ClassSpec,
    Molecule,
    arms_molecule,
    class_specs,
    hinge_molecule,
)
from cryovae.simulate.render import project_volume, render_atoms, tilt_rotations

log = logging.getLogger(__name__)

#: particles rendered per step (bounds memory: chunk x atoms x box float64 arrays).
CHUNK = 256


@dataclass
class SimulatedParticles:
    """A simulated dataset and its ground truth.

    Attributes
    ----------
    kind : ``"hinge"``, ``"arms"``, ``"classes"`` or ``"volume"``.
    config : the :class:`SimulationConfig` that made it.
    images : (n, box, box) float32, what goes into the stack (CTF and noise applied).
    clean : (n, box, box) float32, the projection at the particle's pose, before CTF and noise.
    truth : DataFrame, one row per particle: ``conformation_1`` [, ``conformation_2``] (hinge,
        arms) or ``class`` (classes: the 1-based number of the particle's class), ``psi_deg``,
        ``origin_x_A``, ``origin_y_A`` (RELION convention),
        ``defocus_u_A``, ``defocus_v_A``, ``defocus_angle_deg`` (CTF on), ``tilt_deg``,
        ``tilt_axis_deg`` (tilt on).
    theta_rad : (n,) internal rotation.  center_px : (n, 2) internal centre offset, pixels.
    noise_sigma : standard deviation of the added noise (0 without noise).
    signal_variance : ``mean_i var_box(signal_i)``; ``signal_variance / noise_sigma**2 == snr``.
    scale : every projection was multiplied by this (the canonical mid-conformation image has
        unit standard deviation over the box).
    molecule : the pseudo-atomic molecule (hinge/arms) or ``None``.
    template : the (box, box) canonical projection (volume) or ``None``.
    classes : the classes (``classes`` kind; ``classes[j]`` is class ``j + 1``) or ``None``.
    """

    kind: str
    config: SimulationConfig
    images: np.ndarray
    clean: np.ndarray
    truth: pd.DataFrame
    theta_rad: np.ndarray
    center_px: np.ndarray
    noise_sigma: float
    signal_variance: float
    scale: float
    molecule: Molecule | None = None
    template: np.ndarray | None = None
    tilt: np.ndarray | None = None  # (n, 3, 3) rotations applied before projection, or None
    classes: tuple[ClassSpec, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def pixel_size(self) -> float:
        """Å per pixel."""
        return self.config.pixel_size_A

    @property
    def conformation(self) -> np.ndarray:
        """(n, n_dof) true conformation coordinates in [0, 1] (n_dof = 0 for a volume)."""
        cols = [c for c in self.truth.columns if c.startswith("conformation_")]
        return self.truth[cols].to_numpy(dtype=np.float64)

    def canonical_images(self, idx=None) -> np.ndarray:
        """The particles' projections at ``theta = 0, c = 0`` (same conformation and tilt).

        idx : index array / slice / None (all). Returns (k, box, box) float32.
        """
        sel = np.arange(len(self))[slice(None) if idx is None else idx]
        sel = np.atleast_1d(sel)
        cfg = self.config
        zeros = np.zeros(len(sel)), np.zeros((len(sel), 2))
        if self.classes is not None:
            labels = self.truth["class"].to_numpy()[sel]
            return _render_classes(self.classes, labels, self.tilt[sel] if self.tilt is not None else None,
                                   *zeros, cfg, self.scale)
        if self.molecule is None:
            return np.repeat(self.template[None], len(sel), axis=0)
        coords = self.molecule.coordinates(self.conformation[sel])
        if self.tilt is not None:
            coords = np.einsum("nij,nmj->nmi", self.tilt[sel], coords)
        out = render_atoms(coords, *zeros, cfg.box, cfg.pixel_size_A, cfg.atom_sigma_A)
        return out * np.float32(self.scale)

    def class_images(self) -> np.ndarray:
        """(n_classes, box, box) float32: each class's projection at ``theta = 0, c = 0``, no tilt
        (``classes`` kind only)."""
        if self.classes is None:
            raise ValueError(f"a {self.kind} simulation has no classes")
        k = len(self.classes)
        return _render_classes(self.classes, np.arange(1, k + 1), None, np.zeros(k), np.zeros((k, 2)),
                               self.config, self.scale)


def simulate_hinge(config: SimulationConfig, progress: bool = True) -> SimulatedParticles:
    """A two-domain hinge molecule, one degree of freedom (``conformation_1`` in [0, 1]).

    The arm turns by ``conformation_1 * config.hinge_range_deg`` degrees about its hinge
    (:func:`cryovae.simulate.molecules.hinge_molecule`). ``progress`` shows a tqdm bar.
    """
    return _simulate_molecule("hinge", hinge_molecule(config.hinge_range_deg), config, progress)


def simulate_arms(config: SimulationConfig, progress: bool = True) -> SimulatedParticles:
    """A core with two independently moving arms (``conformation_1``, ``conformation_2``)."""
    return _simulate_molecule("arms", arms_molecule(config.hinge_range_deg), config, progress)


def simulate_classes(config: SimulationConfig, progress: bool = True) -> SimulatedParticles:
    """Discrete classes: each particle is one of ``config.n_classes`` rigid molecules/conformations.

    The classes are :func:`cryovae.simulate.molecules.class_specs` (the hinge closed and open,
    the two-arm molecule, ...); class j holds ``config.class_counts()[j - 1]`` particles, in a
    random order. Poses, tilt, CTF and noise are drawn as for the other kinds. The truth has a
    ``class`` column (1-based). One intensity ``scale`` for every class: the mean over classes of
    their canonical images' standard deviation becomes 1 (the molecules keep their relative mass).
    """
    rng = np.random.default_rng(config.seed)
    specs = class_specs(config.n_classes, config.hinge_range_deg)
    counts = config.class_counts()
    labels = rng.permutation(np.repeat(np.arange(1, len(specs) + 1), counts))
    theta, center = _draw_poses(rng, config)
    truth = pd.DataFrame({"class": labels})
    tilt = _draw_tilt(rng, config, truth)
    k = len(specs)
    ref = _render_classes(specs, np.arange(1, k + 1), None, np.zeros(k), np.zeros((k, 2)), config, 1.0)
    scale = 1.0 / float(ref.reshape(k, -1).std(axis=1).mean())
    clean = np.empty((config.n, config.box, config.box), np.float32)
    starts = range(0, config.n, CHUNK)
    for s in tqdm(starts, desc="rendering", unit="chunk", disable=not progress or config.n <= CHUNK):
        sl = slice(s, min(s + CHUNK, config.n))
        clean[sl] = _render_classes(specs, labels[sl], tilt[sl] if tilt is not None else None, theta[sl],
                                    center[sl], config, scale)
    return _finish("classes", config, rng, clean, theta, center, truth, scale, None, None, tilt, progress, specs)


def class_templates(config: SimulationConfig, theta_rad: np.ndarray) -> np.ndarray:
    """The noise-free images of every class of :func:`simulate_classes` ``(config)`` at each
    rotation, centred, untilted, without CTF, at the set's intensity scale: what a
    classification with perfect templates would compare the particles with.

    theta_rad : (R,) internal rotations (radians).
    Returns (K, R, box, box) float32; ``[j - 1, i]`` is class j at ``theta_rad[i]``.
    """
    specs = class_specs(config.n_classes, config.hinge_range_deg)
    k, theta = len(specs), np.asarray(theta_rad, dtype=np.float64)
    ref = _render_classes(specs, np.arange(1, k + 1), None, np.zeros(k), np.zeros((k, 2)), config, 1.0)
    scale = 1.0 / float(ref.reshape(k, -1).std(axis=1).mean())
    labels = np.repeat(np.arange(1, k + 1), len(theta))
    out = _render_classes(specs, labels, None, np.tile(theta, k), np.zeros((len(labels), 2)), config, scale)
    return out.reshape(k, len(theta), config.box, config.box)


def _render_classes(specs, labels, tilt, theta, center, config: SimulationConfig, scale: float) -> np.ndarray:
    """Render particles of several classes at their poses.

    specs : the classes (``specs[j - 1]`` is class j).  labels : (m,) 1-based classes.
    tilt : (m, 3, 3) rotations before projection, or None.  theta : (m,) radians.
    center : (m, 2) pixels.  scale : multiplies every image.

    Returns
    -------
    (m, box, box) float32.
    """
    out = np.empty((len(labels), config.box, config.box), np.float32)
    for j, spec in enumerate(specs, start=1):
        idx = np.flatnonzero(labels == j)
        if not len(idx):
            continue
        coords = spec.coordinates(len(idx))
        if tilt is not None:
            coords = np.einsum("nij,nmj->nmi", tilt[idx], coords)
        out[idx] = render_atoms(coords, theta[idx], center[idx], config.box, config.pixel_size_A,
                                config.atom_sigma_A) * np.float32(scale)
    return out


def simulate_volume(
    volume: np.ndarray,
    volume_pixel_size_A: float,
    config: SimulationConfig,
    view_euler_deg: tuple[float, float, float] | None = None,
    progress: bool = True,
) -> SimulatedParticles:
    """Particles from a user's 3D map: one projection (one conformation), posed and noised.

    Parameters
    ----------
    volume : (D, D, D) map indexed ``[z, y, x]`` (as read from an MRC file).
    volume_pixel_size_A : Å per voxel of the map.
    config : simulation options (``tilt_sigma_deg`` must be 0; conformation options unused).
    view_euler_deg : optional ZYZ Euler angles (degrees) of the viewing direction.

    The particles are the projection rotated and shifted with
    :func:`cryovae.geometry.transform_image` (cubic interpolation).
    """
    from cryovae.geometry import transform_image

    if config.tilt_sigma_deg > 0:
        raise CryovaeError("tilt is not supported for --volume simulations (set the tilt sigma to 0)")
    template = project_volume(volume, volume_pixel_size_A, config.box, config.pixel_size_A, view_euler_deg)
    std = float(template.std())
    if not std > 0:
        raise CryovaeError("the map's projection is empty (all values equal)")
    scale = 1.0 / std
    template = (template * scale).astype(np.float32)
    rng = np.random.default_rng(config.seed)
    theta, center = _draw_poses(rng, config)
    clean = np.empty((config.n, config.box, config.box), np.float32)
    for i in tqdm(range(config.n), desc="projecting", unit="particle", disable=not progress or config.n < 500):
        clean[i] = transform_image(template, float(theta[i]), center[i])
    truth = pd.DataFrame()
    return _finish("volume", config, rng, clean, theta, center, truth, scale, None, template, None, progress)


def _simulate_molecule(kind: str, molecule: Molecule, config: SimulationConfig, progress: bool) -> SimulatedParticles:
    rng = np.random.default_rng(config.seed)
    n, k = config.n, molecule.n_dof
    if config.n_states is None:
        conf = rng.uniform(0.0, 1.0, size=(n, k))
    else:
        conf = rng.integers(0, config.n_states, size=(n, k)) / (config.n_states - 1)
    theta, center = _draw_poses(rng, config)
    truth = pd.DataFrame({f"conformation_{j + 1}": conf[:, j] for j in range(k)})
    tilt = _draw_tilt(rng, config, truth)

    mid = molecule.coordinates(np.full((1, k), 0.5))
    ref = render_atoms(mid, np.zeros(1), np.zeros((1, 2)), config.box, config.pixel_size_A, config.atom_sigma_A)
    scale = 1.0 / float(ref.std())

    clean = np.empty((n, config.box, config.box), np.float32)
    starts = range(0, n, CHUNK)
    for s in tqdm(starts, desc="rendering", unit="chunk", disable=not progress or n <= CHUNK):
        sl = slice(s, min(s + CHUNK, n))
        coords = molecule.coordinates(conf[sl])
        if tilt is not None:
            coords = np.einsum("nij,nmj->nmi", tilt[sl], coords)
        clean[sl] = render_atoms(coords, theta[sl], center[sl], config.box, config.pixel_size_A,
                                 config.atom_sigma_A) * np.float32(scale)
    return _finish(kind, config, rng, clean, theta, center, truth, scale, molecule, None, tilt, progress)


def _draw_poses(rng: np.random.Generator, config: SimulationConfig) -> tuple[np.ndarray, np.ndarray]:
    """Internal rotation (n,) radians and centre offset (n, 2) pixels."""
    if config.rotation == "uniform":
        theta = rng.uniform(-np.pi, np.pi, size=config.n)
    else:
        theta = np.radians(rng.normal(0.0, config.rotation_sigma_deg, size=config.n))
    center = rng.normal(0.0, config.shift_sigma_px, size=(config.n, 2)) if config.shift_sigma_px > 0 \
        else np.zeros((config.n, 2))
    return theta, center


def _draw_tilt(rng: np.random.Generator, config: SimulationConfig, truth: pd.DataFrame) -> np.ndarray | None:
    """(n, 3, 3) out-of-plane tilts (recorded in ``truth``), or None without tilt."""
    if not config.tilt_sigma_deg > 0:
        return None
    tilt_deg = rng.normal(0.0, config.tilt_sigma_deg, size=config.n)
    axis_deg = rng.uniform(0.0, 180.0, size=config.n)
    truth["tilt_deg"] = tilt_deg
    truth["tilt_axis_deg"] = axis_deg
    return tilt_rotations(tilt_deg, axis_deg)


def _finish(kind, config, rng, clean, theta, center, truth, scale, molecule, template, tilt, progress, classes=None):
    """Record the pose in RELION's convention, apply the CTF, add noise at the requested SNR."""
    n = config.n
    psi, origin_px = internal_to_relion(theta, center)
    truth["psi_deg"] = psi
    truth["origin_x_A"] = origin_px[:, 0] * config.pixel_size_A
    truth["origin_y_A"] = origin_px[:, 1] * config.pixel_size_A
    signal = clean
    if config.ctf:
        du = rng.uniform(config.defocus_min_A, config.defocus_max_A, size=n)
        dv = du - rng.uniform(0.0, config.astigmatism_A, size=n)
        ang = rng.uniform(0.0, 180.0, size=n)
        truth["defocus_u_A"], truth["defocus_v_A"], truth["defocus_angle_deg"] = du, dv, ang
        signal = np.empty_like(clean)
        for s in range(0, n, CHUNK):
            sl = slice(s, min(s + CHUNK, n))
            ctf = ctf_2d(config.box, config.pixel_size_A, du[sl], dv[sl], ang[sl], config.voltage_kv,
                         config.cs_mm, config.amplitude_contrast)
            signal[sl] = apply_ctf(clean[sl], ctf)
    signal_variance = float(np.mean(signal.reshape(n, -1).var(axis=1, dtype=np.float64)))
    noise_sigma = 0.0
    images = signal.copy() if signal is clean else signal
    if config.has_noise:
        noise_sigma = float(np.sqrt(signal_variance / config.snr))
        for s in range(0, n, CHUNK):
            sl = slice(s, min(s + CHUNK, n))
            images[sl] += rng.normal(0.0, noise_sigma, size=images[sl].shape).astype(np.float32)
    log.info("simulated %d %s particles, box %d, %.3g Å/px, SNR %s, noise sigma %.4g", n, kind, config.box,
             config.pixel_size_A, config.snr if config.has_noise else "inf", noise_sigma)
    return SimulatedParticles(kind=kind, config=config, images=images, clean=clean, truth=truth,
                              theta_rad=theta, center_px=np.asarray(center, dtype=np.float64),
                              noise_sigma=noise_sigma, signal_variance=signal_variance, scale=scale,
                              molecule=molecule, template=template, tilt=tilt, classes=classes)
