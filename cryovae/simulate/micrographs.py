"""Simulated micrographs with known particle centres, rotations and conformations, and junk.

Image formation of micrograph k (``(H, W)`` pixels, x along columns, y along rows, the
coordinate convention of :mod:`cryovae.io.coordinates`)::

    object_k   = sum_i place(particle_i at (x_i, y_i))  +  ice blobs  +  carbon edge
    signal_k   = CTF_k * object_k                      (whole micrograph, Fourier space; --ctf)
    image_k    = signal_k + gradient_k + N(0, sigma^2)

* ``particle_i`` is the hinge or two-arm molecule (:mod:`cryovae.simulate.molecules`) at a
  uniform conformation in [0, 1] and a uniform in-plane rotation, rendered exactly as the
  particle simulator renders it (:func:`cryovae.simulate.render.render_atoms`, the same intensity
  ``scale``: the mid-conformation projection has unit standard deviation over a ``box x box``
  box) in a box centred on the pixel ``round(x_i), round(y_i)`` with the sub-pixel rest as the
  centre offset, and added in place. Its truth ``psi_deg`` is RELION's (``internal_to_relion``),
  as in ``cryovae simulate hinge``'s truth.csv.
* SNR: the particle simulator's definition, ``sigma^2 = mean_i var_box(signal_i) / snr`` over
  every particle of every micrograph, where ``signal_i`` is particle i alone in its ``box x box``
  box (after its micrograph's CTF when ``ctf`` is on): one sigma for the whole dataset.
* Packing: particle centres are at least ``min_distance_factor * diameter`` apart (separated
  1.1, touching 1.0, overlapping 0.5), drawn by random sequential addition; no centre closer than
  ``box // 2`` to an edge. ``diameter`` (:attr:`MicrographPlan.particle_diameter_px`) is twice
  the largest in-plane distance of an atom from the molecule's centre over its conformations,
  plus 2 atom sigmas on each side.
* Junk (never a particle, never in the truth): ``junk`` ice blobs per micrograph (soft discs of
  radius 0.15 to 1.2 particle diameters, log-uniform, either contrast, 1 to 3 times the
  particle's mean density) and, unless ``carbon=False``, a carbon edge: a straight edge across
  the micrograph beyond which the density steps (by 0.3 to 0.6 times the particle's mean density, up or
  down), with a bright rim (2 to 4 times) along the edge. Particles
  keep clear of junk (centre distance at least particle radius + blob radius + 6 px, where a
  blob's soft edge has fallen below 2%) and of the rim (3 rim sigmas).
* Gradient: a smooth plane plus a broad bump, up to about ``gradient`` times the particle's mean
  density across the micrograph.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.fft

from cryovae.errors import CryovaeError
from cryovae.geometry import internal_to_relion
from cryovae.simulate.ctf import apply_ctf, ctf_2d, ctf_rfft_grid
from cryovae.simulate.molecules import Molecule, arms_molecule, hinge_molecule
from cryovae.simulate.render import render_atoms

log = logging.getLogger(__name__)

MOLECULES = ("hinge", "arms")
#: packing -> minimum centre distance in particle diameters
PACKING = {"separated": 1.1, "touching": 1.0, "overlapping": 0.5}
#: packing -> default particle density: area fraction covered by particle discs (of one diameter)
DENSITY = {"separated": 0.25, "touching": 0.4, "overlapping": 0.4}
#: particles rendered per step (bounds memory: chunk x atoms x box float64 arrays)
CHUNK = 256
#: Gaussian sigma of the carbon rim, pixels
RIM_SIGMA_PX = 2.0
_SOFT_EDGE_PX = 1.5
#: gap between a particle's disc and an ice blob's radius, pixels (the blob's soft edge is below 2% there)
JUNK_CLEARANCE_PX = 4 * _SOFT_EDGE_PX


@dataclass(frozen=True)
class MicrographConfig:
    """Everything that determines a simulated micrograph set (with ``seed``, it is reproducible).

    Attributes
    ----------
    n_micrographs : number of micrographs.
    width, height : micrograph size, pixels.
    pixel_size_A : Å per pixel (the particle simulator's default, 4).
    box : particle box at that pixel size, pixels (the matching training set's box).
    molecule : ``"hinge"`` or ``"arms"``.
    packing : ``"separated"``, ``"touching"`` or ``"overlapping"`` (see :data:`PACKING`).
    particles : particles per micrograph; None: as many as the packing's default density
        (:data:`DENSITY`) allows, or fewer when no more fit.
    junk : ice blobs per micrograph.
    carbon : add a carbon edge to each micrograph.
    gradient : background gradient amplitude, in units of the particle's mean density.
    snr : ``mean_i var_box(signal_i) / sigma**2``; None for no noise.
    ctf : apply a CTF to each whole micrograph.
    defocus_min_A, defocus_max_A : defocus U uniform in this range, per micrograph (Å).
    astigmatism_A : defocus V = U - a with a uniform in ``[0, astigmatism_A]``.
    voltage_kv, cs_mm, amplitude_contrast : microscope (written to micrographs.star's optics).
    hinge_range_deg : the arm turns by ``conformation * hinge_range_deg``.
    atom_sigma_A : pseudo-atom Gaussian sigma, Å.
    seed : seed of every random draw.
    """

    n_micrographs: int = 4
    width: int = 1024
    height: int = 1024
    pixel_size_A: float = 4.0
    box: int = 40
    molecule: str = "hinge"
    packing: str = "separated"
    particles: int | None = None
    junk: int = 10
    carbon: bool = True
    gradient: float = 1.0
    snr: float | None = 0.1
    ctf: bool = False
    defocus_min_A: float = 10000.0
    defocus_max_A: float = 30000.0
    astigmatism_A: float = 500.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    hinge_range_deg: float = 40.0
    atom_sigma_A: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_micrographs < 1:
            raise CryovaeError(f"number of micrographs must be >= 1, got {self.n_micrographs}")
        if self.box < 8:
            raise CryovaeError(f"box must be >= 8 pixels, got {self.box}")
        if min(self.width, self.height) < 2 * self.box:
            raise CryovaeError(f"a micrograph of {self.width} x {self.height} pixels is too small for box "
                               f"{self.box} (each side must be >= {2 * self.box})")
        if not self.pixel_size_A > 0:
            raise CryovaeError(f"pixel size must be > 0 Å, got {self.pixel_size_A}")
        if self.molecule not in MOLECULES:
            raise CryovaeError(f"molecule must be one of {', '.join(MOLECULES)}, got {self.molecule!r}")
        if self.packing not in PACKING:
            raise CryovaeError(f"packing must be one of {', '.join(PACKING)}, got {self.packing!r}")
        if self.particles is not None and self.particles < 0:
            raise CryovaeError(f"particles per micrograph must be >= 0, got {self.particles}")
        if self.junk < 0:
            raise CryovaeError(f"junk per micrograph must be >= 0, got {self.junk}")
        if self.gradient < 0:
            raise CryovaeError(f"gradient must be >= 0, got {self.gradient}")
        if self.snr is not None and not self.snr > 0:
            raise CryovaeError(f"snr must be > 0 (or omitted for no noise), got {self.snr}")
        if self.ctf:
            if not 0 < self.defocus_min_A <= self.defocus_max_A:
                raise CryovaeError(
                    f"defocus range must satisfy 0 < min <= max Å, got {self.defocus_min_A}..{self.defocus_max_A}")
            if not 0 <= self.astigmatism_A < self.defocus_min_A:
                raise CryovaeError("astigmatism must be >= 0 and smaller than the minimum defocus")
            if not 0 <= self.amplitude_contrast < 1:
                raise CryovaeError(f"amplitude contrast must be in [0, 1), got {self.amplitude_contrast}")

    @property
    def has_noise(self) -> bool:
        return self.snr is not None and math.isfinite(self.snr)

    @property
    def min_distance_factor(self) -> float:
        """Minimum particle centre distance, in particle diameters."""
        return PACKING[self.packing]

    def build_molecule(self) -> Molecule:
        return (hinge_molecule if self.molecule == "hinge" else arms_molecule)(self.hinge_range_deg)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MicrographLayout:
    """What is where on one micrograph (no pixels).

    name : ``mic_000`` ...
    particles : one row per particle: ``x_px``, ``y_px`` (micrograph pixels), ``theta_rad``
        (internal rotation), ``psi_deg`` (RELION), ``conformation_1`` [, ``conformation_2``].
    junk : one row per ice blob: ``x_px``, ``y_px``, ``radius_px``, ``amplitude``.
    carbon : ``{"normal": [nx, ny], "offset": d, "step": s, "rim": r}`` (the edge is the line
        ``nx x + ny y = d``, carbon where ``nx x + ny y > d``), or None.
    gradient : ``{"gx": .., "gy": .., "bump": .., "bump_x": .., "bump_y": .., "bump_sigma": ..}``.
    defocus : ``(U, V, angle)`` in Å, Å, degrees, or None without CTF.
    seed : the micrograph's noise seed.
    """

    name: str
    particles: pd.DataFrame
    junk: pd.DataFrame
    carbon: dict | None
    gradient: dict
    defocus: tuple[float, float, float] | None
    seed: int

    def describe(self) -> dict:
        """JSON-ready summary (for simulation.json)."""
        out: dict = {"name": self.name, "n_particles": int(len(self.particles)), "n_junk": int(len(self.junk)),
                     "carbon": self.carbon, "gradient": self.gradient}
        if self.defocus is not None:
            out["defocus_u_A"], out["defocus_v_A"], out["defocus_angle_deg"] = (float(v) for v in self.defocus)
        return out


@dataclass
class MicrographPlan:
    """The layouts of a micrograph set and the constants every micrograph shares.

    config : the options.  molecule : the pseudo-atomic molecule.
    scale : every particle projection is multiplied by this (as in the particle simulator).
    particle_diameter_px : the particle's diameter (module docstring), pixels.
    particle_density : the particle's mean projected density inside its diameter (scaled units);
        junk, carbon and gradient amplitudes are relative to it.
    signal_variance : ``mean_i var_box(signal_i)`` over every particle.
    noise_sigma : ``sqrt(signal_variance / snr)`` (0 without noise).
    layouts : one per micrograph.
    """

    config: MicrographConfig
    molecule: Molecule
    scale: float
    particle_diameter_px: float
    particle_density: float
    signal_variance: float
    noise_sigma: float
    layouts: list[MicrographLayout] = field(default_factory=list)


@dataclass
class SimulatedMicrograph:
    """One rendered micrograph.

    layout : what is where.  image : ``(H, W)`` float32, what is written (noise included).
    clean : ``(H, W)`` float32, the same without noise (signal + gradient), or None when not kept.
    """

    layout: MicrographLayout
    image: np.ndarray
    clean: np.ndarray | None

    @property
    def name(self) -> str:
        return self.layout.name


def micrograph_names(n: int) -> list[str]:
    """``mic_000`` ... (at least 3 digits)."""
    digits = max(3, len(str(n - 1)))
    return [f"mic_{k:0{digits}d}" for k in range(n)]


def _particle_constants(config: MicrographConfig, molecule: Molecule) -> tuple[float, float, float]:
    """(scale, diameter in pixels, mean density inside the diameter) of the molecule."""
    k = molecule.n_dof
    mid = molecule.coordinates(np.full((1, k), 0.5))
    ref = render_atoms(mid, np.zeros(1), np.zeros((1, 2)), config.box, config.pixel_size_A, config.atom_sigma_A)
    scale = 1.0 / float(ref.std())  # what the particle simulator uses for the same molecule and box
    grid = np.stack(np.meshgrid(*[np.linspace(0.0, 1.0, 9)] * k, indexing="ij"), -1).reshape(-1, k)
    coords = molecule.coordinates(grid)
    r_max = float(np.linalg.norm(coords[..., :2], axis=-1).max())
    diameter = 2.0 * (r_max + 2.0 * config.atom_sigma_A) / config.pixel_size_A
    total = float(ref.sum()) * scale
    density = total / (math.pi * (diameter / 2) ** 2)
    return scale, diameter, density


def _random_sequential(rng: np.random.Generator, n_target: int, min_dist: float, lo: np.ndarray, hi: np.ndarray,
                       allowed, max_failures: int = 20000) -> np.ndarray:
    """Random sequential addition of points at least ``min_dist`` apart in the box [lo, hi].

    allowed : callable ``(m, 2) -> (m,) bool`` that rejects candidates (junk, carbon rim).
    Stops at ``n_target`` points or after ``max_failures`` rejected candidates in a row.

    Returns
    -------
    (n, 2) float64 ``(x, y)``.
    """
    cell = max(min_dist, 1e-6)
    grid: dict[tuple[int, int], list[int]] = {}
    points: list[tuple[float, float]] = []
    failures = 0
    d2 = min_dist * min_dist
    while len(points) < n_target and failures < max_failures:
        cand = rng.uniform(lo, hi, size=(512, 2))
        cand = cand[allowed(cand)]
        if not len(cand):
            failures += 512
            continue
        for x, y in cand:
            cx, cy = int(x // cell), int(y // cell)
            ok = True
            for gx in (cx - 1, cx, cx + 1):
                for gy in (cy - 1, cy, cy + 1):
                    for j in grid.get((gx, gy), ()):
                        px, py = points[j]
                        if (px - x) ** 2 + (py - y) ** 2 < d2:
                            ok = False
                            break
                    if not ok:
                        break
                if not ok:
                    break
            if ok:
                grid.setdefault((cx, cy), []).append(len(points))
                points.append((float(x), float(y)))
                failures = 0
                if len(points) >= n_target:
                    break
            else:
                failures += 1
                if failures >= max_failures:
                    break
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def _layout(config: MicrographConfig, name: str, seed_seq: np.random.SeedSequence, diameter: float,
            n_dof: int) -> MicrographLayout:
    rng = np.random.default_rng(seed_seq)
    w, h = config.width, config.height
    radius = diameter / 2
    carbon = None
    if config.carbon:
        side = int(rng.integers(4))  # the carbon covers a strip along one side
        angle = math.radians(rng.uniform(-20.0, 20.0) + 90.0 * side)
        normal = np.array([math.cos(angle), math.sin(angle)])  # points into the carbon
        span = abs(normal[0]) * w + abs(normal[1]) * h
        corner_max = max(normal @ np.array([x, y]) for x in (0, w) for y in (0, h))
        offset = corner_max - rng.uniform(0.1, 0.25) * span
        carbon = {"normal": [float(normal[0]), float(normal[1])], "offset": float(offset),
                  "step": float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.6)), "rim": float(rng.uniform(2.0, 4.0))}
    # ice blobs: anywhere, log-uniform radius
    n_junk = config.junk
    jr = diameter * np.exp(rng.uniform(np.log(0.15), np.log(1.2), size=n_junk))
    jx, jy = rng.uniform(0, w, size=n_junk), rng.uniform(0, h, size=n_junk)
    amp = rng.choice([-1.0, 1.0], size=n_junk) * rng.uniform(1.0, 3.0, size=n_junk)
    junk = pd.DataFrame({"x_px": jx, "y_px": jy, "radius_px": jr, "amplitude": amp})
    rim_clear = radius + 3 * RIM_SIGMA_PX

    def allowed(xy: np.ndarray) -> np.ndarray:
        ok = np.ones(len(xy), bool)
        if n_junk:
            dist = np.hypot(xy[:, None, 0] - jx[None], xy[:, None, 1] - jy[None])
            ok &= (dist >= radius + jr[None] + JUNK_CLEARANCE_PX).all(axis=1)
        if carbon is not None:
            ok &= np.abs(xy @ np.asarray(carbon["normal"]) - carbon["offset"]) >= rim_clear
        return ok

    margin = config.box // 2 + 1
    lo, hi = np.array([margin, margin], float), np.array([w - 1 - margin, h - 1 - margin], float)
    if config.particles is None:
        area = float(np.prod(hi - lo))
        n_target = int(DENSITY[config.packing] * area / (math.pi * radius * radius))
    else:
        n_target = config.particles
    xy = _random_sequential(rng, n_target, config.min_distance_factor * diameter, lo, hi, allowed)
    if config.particles is not None and len(xy) < config.particles:
        log.warning("%s: only %d of %d particles fit at the %s packing", name, len(xy), config.particles,
                    config.packing)
    n = len(xy)
    theta = rng.uniform(-np.pi, np.pi, size=n)
    conf = rng.uniform(0.0, 1.0, size=(n, n_dof))
    psi, _ = internal_to_relion(theta, np.zeros((n, 2)))
    particles = pd.DataFrame({"x_px": xy[:, 0], "y_px": xy[:, 1], "theta_rad": theta, "psi_deg": psi,
                              **{f"conformation_{j + 1}": conf[:, j] for j in range(n_dof)}})
    gradient = {"gx": float(rng.uniform(-1, 1) * config.gradient), "gy": float(rng.uniform(-1, 1) * config.gradient),
                "bump": float(rng.uniform(-0.5, 0.5) * config.gradient), "bump_x": float(rng.uniform(0, w)),
                "bump_y": float(rng.uniform(0, h)), "bump_sigma": float(rng.uniform(0.3, 0.6) * max(w, h))}
    defocus = None
    if config.ctf:
        du = float(rng.uniform(config.defocus_min_A, config.defocus_max_A))
        defocus = (du, du - float(rng.uniform(0.0, config.astigmatism_A)), float(rng.uniform(0.0, 180.0)))
    return MicrographLayout(name=name, particles=particles, junk=junk, carbon=carbon, gradient=gradient,
                            defocus=defocus, seed=int(rng.integers(2**31)))


def _conformations(particles: pd.DataFrame) -> np.ndarray:
    cols = [c for c in particles.columns if c.startswith("conformation_")]
    return particles[cols].to_numpy(dtype=np.float64)


def _placement(particles: pd.DataFrame, box: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row0, col0) of each particle's box and the sub-pixel centre offset ``(cx, cy)`` in it."""
    x = particles["x_px"].to_numpy(dtype=np.float64)
    y = particles["y_px"].to_numpy(dtype=np.float64)
    rx, ry = np.rint(x), np.rint(y)
    offset = np.stack([x - rx, y - ry], axis=1)
    return ry.astype(np.int64) - box // 2, rx.astype(np.int64) - box // 2, offset


def render_particles(plan: MicrographPlan, particles: pd.DataFrame) -> Iterator[tuple[slice, np.ndarray]]:
    """The particles alone, each in its ``box x box`` box, in chunks: ``(rows, (m, box, box))``.

    Each image is what the particle simulator renders for the same conformation, rotation and
    centre offset (the sub-pixel rest of the particle's micrograph position), scale included.
    """
    cfg = plan.config
    conf = _conformations(particles)
    theta = particles["theta_rad"].to_numpy(dtype=np.float64)
    _, _, offset = _placement(particles, cfg.box)
    for s in range(0, len(particles), CHUNK):
        sl = slice(s, min(s + CHUNK, len(particles)))
        coords = plan.molecule.coordinates(conf[sl])
        images = render_atoms(coords, theta[sl], offset[sl], cfg.box, cfg.pixel_size_A, cfg.atom_sigma_A)
        yield sl, images * np.float32(plan.scale)


def _box_ctf(plan: MicrographPlan, layout: MicrographLayout) -> np.ndarray | None:
    cfg = plan.config
    if layout.defocus is None:
        return None
    du, dv, ang = layout.defocus
    return ctf_2d(cfg.box, cfg.pixel_size_A, np.array([du]), np.array([dv]), np.array([ang]), cfg.voltage_kv,
                  cfg.cs_mm, cfg.amplitude_contrast)


def particle_signal_variances(plan: MicrographPlan, layout: MicrographLayout) -> np.ndarray:
    """(n,) ``var_box(signal_i)`` of each particle of ``layout`` alone in its box (after the CTF
    of its micrograph when the CTF is on): the particle simulator's SNR definition."""
    ctf = _box_ctf(plan, layout)
    out = np.empty(len(layout.particles), np.float64)
    for sl, images in render_particles(plan, layout.particles):
        if ctf is not None:
            images = apply_ctf(images, np.broadcast_to(ctf, (len(images), *ctf.shape[1:])))
        out[sl] = images.reshape(len(images), -1).var(axis=1, dtype=np.float64)
    return out


def plan_micrographs(config: MicrographConfig) -> MicrographPlan:
    """Lay out every micrograph and fix the noise sigma (renders each particle once, alone).

    Returns
    -------
    MicrographPlan
    """
    molecule = config.build_molecule()
    scale, diameter, density = _particle_constants(config, molecule)
    plan = MicrographPlan(config=config, molecule=molecule, scale=scale, particle_diameter_px=diameter,
                          particle_density=density, signal_variance=0.0, noise_sigma=0.0)
    root = np.random.SeedSequence(config.seed)
    seeds = root.spawn(config.n_micrographs)
    plan.layouts = [_layout(config, name, seeds[k], diameter, molecule.n_dof)
                    for k, name in enumerate(micrograph_names(config.n_micrographs))]
    variances = np.concatenate([particle_signal_variances(plan, lay) for lay in plan.layouts])
    if len(variances) == 0:
        raise CryovaeError("no particle fits on the micrographs (make them larger or lower --junk)")
    plan.signal_variance = float(variances.mean())
    if config.has_noise:
        assert config.snr is not None
        plan.noise_sigma = float(np.sqrt(plan.signal_variance / config.snr))
    log.info("%d micrographs of %d x %d px, %d particles (diameter %.1f px), noise sigma %.4g",
             config.n_micrographs, config.width, config.height, sum(len(lay.particles) for lay in plan.layouts),
             diameter, plan.noise_sigma)
    return plan


def _add_box(target: np.ndarray, image: np.ndarray, row0: int, col0: int) -> None:
    """``target[row0:row0+b, col0:col0+b] += image``, clipped at the edges."""
    h, w = target.shape
    b0, b1 = image.shape
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + b0, h), min(col0 + b1, w)
    if r1 <= r0 or c1 <= c0:
        return
    target[r0:r1, c0:c1] += image[r0 - row0:r1 - row0, c0 - col0:c1 - col0]


def _add_blob(target: np.ndarray, x: float, y: float, radius: float, amplitude: float) -> None:
    """A soft disc (logistic edge, width :data:`_SOFT_EDGE_PX`) added in its own window."""
    reach = radius + 6 * _SOFT_EDGE_PX
    r0, r1 = int(max(math.floor(y - reach), 0)), int(min(math.ceil(y + reach) + 1, target.shape[0]))
    c0, c1 = int(max(math.floor(x - reach), 0)), int(min(math.ceil(x + reach) + 1, target.shape[1]))
    if r1 <= r0 or c1 <= c0:
        return
    rr, cc = np.mgrid[r0:r1, c0:c1]
    dist = np.hypot(cc - x, rr - y)
    with np.errstate(over="ignore"):
        target[r0:r1, c0:c1] += (amplitude / (1.0 + np.exp((dist - radius) / _SOFT_EDGE_PX))).astype(np.float32)


def _add_carbon(target: np.ndarray, carbon: dict, density: float) -> None:
    """The thickness step beyond the edge and the bright rim along it, row block by row block."""
    nx, ny = carbon["normal"]
    w = target.shape[1]
    cols = np.arange(w, dtype=np.float64)
    for r0 in range(0, target.shape[0], 256):
        rows = np.arange(r0, min(r0 + 256, target.shape[0]), dtype=np.float64)
        d = nx * cols[None, :] + ny * rows[:, None] - carbon["offset"]
        step = carbon["step"] * density / (1.0 + np.exp(-np.clip(d / _SOFT_EDGE_PX, -50, 50)))
        rim = carbon["rim"] * density * np.exp(-0.5 * (d / RIM_SIGMA_PX) ** 2)
        target[r0:r0 + len(rows)] += (step + rim).astype(np.float32)


def _gradient(shape: tuple[int, int], gradient: dict, density: float) -> np.ndarray:
    h, w = shape
    x = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
    y = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
    bx = np.exp(-0.5 * ((np.arange(w) - gradient["bump_x"]) / gradient["bump_sigma"]) ** 2).astype(np.float32)
    by = np.exp(-0.5 * ((np.arange(h) - gradient["bump_y"]) / gradient["bump_sigma"]) ** 2).astype(np.float32)
    g = gradient["gx"] * x + gradient["gy"] * y + gradient["bump"] * by[:, None] * bx[None, :]
    return (np.float32(density) * g).astype(np.float32)


def render_object(plan: MicrographPlan, layout: MicrographLayout, particles: bool = True,
                  junk: bool = True) -> np.ndarray:
    """``(H, W)`` float32 object of one micrograph before CTF, gradient and noise: the particles
    (each added in place in its box) and/or the junk (ice blobs, carbon edge)."""
    cfg = plan.config
    out = np.zeros((cfg.height, cfg.width), np.float32)
    if particles:
        row0, col0, _ = _placement(layout.particles, cfg.box)
        for sl, images in render_particles(plan, layout.particles):
            for j, image in zip(range(sl.start, sl.stop), images, strict=True):
                _add_box(out, image, int(row0[j]), int(col0[j]))
    if junk:
        for blob in layout.junk.itertuples():
            _add_blob(out, blob.x_px, blob.y_px, blob.radius_px, blob.amplitude * plan.particle_density)
        if layout.carbon is not None:
            _add_carbon(out, layout.carbon, plan.particle_density)
    return out


def apply_micrograph_ctf(plan: MicrographPlan, layout: MicrographLayout, image: np.ndarray) -> np.ndarray:
    """``irfft2(rfft2(image) * CTF)`` over the whole micrograph (float32); ``image`` unchanged
    without CTF."""
    if layout.defocus is None:
        return image
    cfg = plan.config
    du, dv, ang = layout.defocus
    ctf = ctf_rfft_grid(image.shape, cfg.pixel_size_A, np.array([du]), np.array([dv]), np.array([ang]),
                        cfg.voltage_kv, cfg.cs_mm, cfg.amplitude_contrast)[0].astype(np.float32)
    spectrum = scipy.fft.rfft2(image)
    spectrum *= ctf
    return scipy.fft.irfft2(spectrum, s=image.shape).astype(np.float32)


def render_micrograph(plan: MicrographPlan, k: int, keep_clean: bool = False) -> SimulatedMicrograph:
    """Render micrograph ``k`` of ``plan`` (noise from the layout's seed: reproducible).

    keep_clean : also return the noise-free micrograph (doubles the memory).
    """
    layout = plan.layouts[k]
    signal = apply_micrograph_ctf(plan, layout, render_object(plan, layout))
    signal += _gradient(signal.shape, layout.gradient, plan.particle_density)
    clean = signal.copy() if keep_clean else None
    if plan.noise_sigma > 0:
        rng = np.random.default_rng(layout.seed)
        noise = rng.standard_normal(signal.shape, dtype=np.float32)
        noise *= np.float32(plan.noise_sigma)
        signal += noise
    return SimulatedMicrograph(layout=layout, image=signal, clean=clean)
