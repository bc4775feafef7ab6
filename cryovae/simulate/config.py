"""Options of a simulation, as one frozen dataclass.

Units are in the names: ``_A`` Å, ``_px`` pixels of the output box, ``_deg`` degrees,
``_kv`` kilovolts, ``_mm`` millimetres.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.simulate.molecules import CLASS_NAMES

KINDS = ("hinge", "arms", "classes", "volume")
ROTATIONS = ("uniform", "normal")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated dataset (with ``seed``, it is reproducible).

    Attributes
    ----------
    n : number of particles.
    box : image size in pixels (square).
    pixel_size_A : Å per pixel.
    rotation : ``"uniform"`` (psi uniform on (-180, 180]) or ``"normal"`` (psi ~ N(0, sigma)).
    rotation_sigma_deg : sigma of the normal rotation distribution, degrees.
    shift_sigma_px : sigma of the particle centre offset, per axis, in **pixels** (0 = centred).
    snr : signal-to-noise ratio, ``mean_i var_box(signal_i) / sigma_noise**2``, where
        ``signal_i`` is particle i's noise-free image (after the CTF when it is on) and the
        variance is taken over all ``box x box`` pixels. One noise sigma for the whole dataset,
        as in a real micrograph. ``None`` (or ``inf``) adds no noise. Real cryo-EM: 0.01-0.1.
    ctf : apply a CTF (RELION's formula, see :mod:`cryovae.simulate.ctf`) to each particle.
    defocus_min_A, defocus_max_A : defocus U is uniform in this range (Å, underfocus positive).
    astigmatism_A : defocus V = U - a with a uniform in ``[0, astigmatism_A]``.
    voltage_kv, cs_mm, amplitude_contrast : microscope (also written to the star's optics block).
    hinge_range_deg : the arm turns by ``conformation * hinge_range_deg`` about its hinge axis
        (spatial-VAE's 5HDB set: 20 steps of ~2 degrees, i.e. about 40 degrees).
    n_states : ``None`` for a continuous conformation in [0, 1]; an integer k for k equally
        spaced discrete states ``0, 1/(k-1), ..., 1`` (5HDB: 20).
    tilt_sigma_deg : sigma of a small random out-of-plane tilt about a random in-plane axis,
        applied before projection (0 = every particle is viewed exactly along z).
    atom_sigma_A : width (sigma, Å) of each pseudo-atom's Gaussian density.
    n_classes : number of discrete classes of the ``classes`` kind, 2 to ``len(CLASS_NAMES)``
        (the first ``n_classes`` of :data:`cryovae.simulate.molecules.CLASS_NAMES`); unused by
        the other kinds.
    class_shares : fraction of the particles in each class (``n_classes`` positive numbers that
        sum to 1, within 0.001; rescaled to sum to exactly 1); ``None`` for equal shares. The
        counts are :meth:`class_counts`.
    seed : seed of every random draw (poses, conformations, defocus, noise).
    """

    n: int = 2000
    box: int = 40
    pixel_size_A: float = 4.0
    rotation: str = "uniform"
    rotation_sigma_deg: float = 30.0
    shift_sigma_px: float = 0.0
    snr: float | None = 0.1
    ctf: bool = False
    defocus_min_A: float = 10000.0
    defocus_max_A: float = 25000.0
    astigmatism_A: float = 500.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    hinge_range_deg: float = 40.0
    n_states: int | None = None
    tilt_sigma_deg: float = 0.0
    atom_sigma_A: float = 5.0
    n_classes: int = 4
    class_shares: tuple[float, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise CryovaeError(f"number of particles must be >= 1, got {self.n}")
        if self.box < 8:
            raise CryovaeError(f"box must be >= 8 pixels, got {self.box}")
        if not self.pixel_size_A > 0:
            raise CryovaeError(f"pixel size must be > 0 Å, got {self.pixel_size_A}")
        if self.rotation not in ROTATIONS:
            raise CryovaeError(f"rotation must be one of {', '.join(ROTATIONS)}, got {self.rotation!r}")
        if self.rotation_sigma_deg < 0 or self.shift_sigma_px < 0 or self.tilt_sigma_deg < 0:
            raise CryovaeError("rotation, shift and tilt sigmas must be >= 0")
        if self.snr is not None and not (self.snr > 0):
            raise CryovaeError(f"snr must be > 0 (or omitted for no noise), got {self.snr}")
        if self.ctf:
            if not 0 < self.defocus_min_A <= self.defocus_max_A:
                raise CryovaeError(
                    f"defocus range must satisfy 0 < min <= max Å, got {self.defocus_min_A}..{self.defocus_max_A}")
            if not 0 <= self.astigmatism_A < self.defocus_min_A:
                raise CryovaeError("astigmatism must be >= 0 and smaller than the minimum defocus")
            if not 0 <= self.amplitude_contrast < 1:
                raise CryovaeError(f"amplitude contrast must be in [0, 1), got {self.amplitude_contrast}")
            if not self.voltage_kv > 0:
                raise CryovaeError(f"voltage must be > 0 kV, got {self.voltage_kv}")
        if self.n_states is not None and self.n_states < 2:
            raise CryovaeError(f"n_states must be >= 2 (or None for continuous), got {self.n_states}")
        if not self.atom_sigma_A > 0:
            raise CryovaeError(f"atom sigma must be > 0 Å, got {self.atom_sigma_A}")
        if not 2 <= self.n_classes <= len(CLASS_NAMES):
            raise CryovaeError(f"the number of classes must be 2 to {len(CLASS_NAMES)}, got {self.n_classes}")
        if self.class_shares is not None:
            shares = np.asarray(self.class_shares, dtype=np.float64)
            if len(shares) != self.n_classes:
                raise CryovaeError(f"{len(shares)} class shares for {self.n_classes} classes (give one per class)")
            if not (np.isfinite(shares).all() and (shares > 0).all()):
                raise CryovaeError(f"class shares must be positive numbers, got {_listed(shares)}")
            if abs(shares.sum() - 1.0) > 1e-3:
                raise CryovaeError(f"class shares must sum to 1, got {_listed(shares)} (sum {shares.sum():g})")
            empty = np.flatnonzero(self.class_counts() == 0)
            if len(empty):
                raise CryovaeError(f"class {empty[0] + 1} gets no particle with share {shares[empty[0]]:g} of "
                                   f"{self.n} particles (raise the number of particles or that share)")

    def class_counts(self) -> np.ndarray:
        """(n_classes,) int: particles per class, ``n * share`` rounded so the counts sum to ``n``
        (largest remainders first, ties to the lower class)."""
        k = self.n_classes
        shares = np.full(k, 1.0 / k) if self.class_shares is None else np.asarray(self.class_shares, np.float64)
        exact = self.n * shares / shares.sum()
        counts = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[: self.n - int(counts.sum())]] += 1
        return counts

    @property
    def has_noise(self) -> bool:
        """True when noise is added (``snr`` finite)."""
        return self.snr is not None and math.isfinite(self.snr)

    def to_dict(self) -> dict:
        """Plain dict of every option (for ``simulation.json``)."""
        out = asdict(self)
        if self.class_shares is not None:
            out["class_shares"] = [float(v) for v in self.class_shares]
        return out


def _listed(values: np.ndarray) -> str:
    return ",".join(f"{v:g}" for v in values)
