"""Pseudo-atomic molecules with hinged domains.

A molecule is a rigid body plus one or more arms. Each arm is a cloud of pseudo-atoms that
turns as a rigid body about its own hinge axis (a 3D line through a pivot point) by
``conformation * range_deg`` degrees, ``conformation`` in [0, 1]. Coordinates are in Å, in the
internal frame of :mod:`cryovae.geometry` extended to 3D (x along columns, y along rows, z the
viewing direction), centred so that the atoms' centroid at conformation 0.5 is the origin.

The built-in shapes are asymmetric (no in-plane rotational or mirror symmetry in projection),
so the in-plane rotation of a particle is identifiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the pseudo-atom clouds are drawn with this fixed seed: the molecule is the same in every dataset.
STRUCTURE_SEED = 20190910


@dataclass(frozen=True)
class Arm:
    """A rigid domain that turns about a hinge.

    atoms : (m, 3) Å, the arm's pseudo-atoms at conformation 0.
    pivot : (3,) Å, a point on the hinge axis.
    axis : (3,) unit vector of the hinge axis (turn is right-handed about it).
    """

    atoms: np.ndarray
    pivot: np.ndarray
    axis: np.ndarray


@dataclass(frozen=True)
class Molecule:
    """A body with arms; ``len(arms)`` degrees of freedom.

    body : (m0, 3) Å pseudo-atoms that never move.
    arms : the hinged domains, conformation coordinate k drives ``arms[k]``.
    range_deg : total turn of every arm over conformation 0 -> 1, degrees.
    """

    body: np.ndarray
    arms: tuple[Arm, ...]
    range_deg: float

    @property
    def n_dof(self) -> int:
        return len(self.arms)

    @property
    def n_atoms(self) -> int:
        return len(self.body) + sum(len(a.atoms) for a in self.arms)

    def coordinates(self, conformation: np.ndarray) -> np.ndarray:
        """Atom coordinates for a batch of conformations.

        Parameters
        ----------
        conformation : (n, n_dof) values in [0, 1].

        Returns
        -------
        (n, n_atoms, 3) float64 coordinates in Å; body atoms first, then each arm's.
        """
        conf = np.atleast_2d(np.asarray(conformation, dtype=np.float64))
        if conf.shape[1] != self.n_dof:
            raise ValueError(f"conformation must have {self.n_dof} columns, got {conf.shape[1]}")
        n = conf.shape[0]
        parts = [np.broadcast_to(self.body, (n, *self.body.shape))]
        for k, arm in enumerate(self.arms):
            angle = np.radians(conf[:, k] * self.range_deg)
            rot = axis_rotation(arm.axis, angle)  # (n, 3, 3)
            moved = np.einsum("nij,mj->nmi", rot, arm.atoms - arm.pivot) + arm.pivot
            parts.append(moved)
        return np.concatenate(parts, axis=1)


def axis_rotation(axis: np.ndarray, angle_rad: np.ndarray) -> np.ndarray:
    """Rodrigues rotation matrices about a unit ``axis`` (3,) by ``angle_rad`` (n,) -> (n, 3, 3)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    ang = np.atleast_1d(np.asarray(angle_rad, dtype=np.float64))
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    s, c = np.sin(ang)[:, None, None], np.cos(ang)[:, None, None]
    return np.eye(3)[None] + s * k[None] + (1 - c) * (k @ k)[None]


def _ellipsoid(rng: np.random.Generator, n: int, centre, semi_axes, direction_deg: float = 0.0) -> np.ndarray:
    """``n`` points uniform in an ellipsoid whose first semi-axis points along ``direction_deg``
    (in the x-y plane, from +x towards +y). Returns (n, 3) Å."""
    pts = rng.normal(size=(n, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    pts *= rng.uniform(0, 1, size=(n, 1)) ** (1 / 3)
    pts *= np.asarray(semi_axes, dtype=np.float64)
    t = np.radians(direction_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    return pts @ rot.T + np.asarray(centre, dtype=np.float64)


def _centred(body: np.ndarray, arms: list[Arm], range_deg: float) -> Molecule:
    """Shift everything so the centroid at conformation 0.5 is the origin."""
    mol = Molecule(body=body, arms=tuple(arms), range_deg=range_deg)
    centre = mol.coordinates(np.full((1, mol.n_dof), 0.5))[0].mean(axis=0)
    centre[2] = 0.0  # only the projection plane matters; keep z as built
    return Molecule(
        body=body - centre,
        arms=tuple(Arm(a.atoms - centre, a.pivot - centre, a.axis / np.linalg.norm(a.axis)) for a in arms),
        range_deg=range_deg,
    )


def hinge_molecule(range_deg: float = 40.0) -> Molecule:
    """Two domains joined by a hinge (one degree of freedom), about 110 Å long.

    A large body (an ellipsoid with a knob at one end) and an arm (an ellipsoid with a head)
    attached near the body's other end (at most ~60 Å from the centre:
    it fits the default 160 Å box with room for shifts). The hinge axis is tilted 15 degrees from the viewing
    direction, so the arm swings mostly in the image plane and slightly out of it — like the
    5HDB integrin headpiece of spatial-VAE, where the beta subunit turns about its interface.
    """
    rng = np.random.default_rng(STRUCTURE_SEED)
    body = np.concatenate([
        _ellipsoid(rng, 220, (-14.0, 0.0, 0.0), (26.0, 15.0, 13.0)),
        _ellipsoid(rng, 40, (-36.0, 12.0, 0.0), (9.0, 9.0, 9.0)),
    ])
    arm_dir = 70.0
    d = np.array([np.cos(np.radians(arm_dir)), np.sin(np.radians(arm_dir)), 0.0])
    pivot = np.array([10.0, 6.0, 0.0])
    arm_atoms = np.concatenate([
        _ellipsoid(rng, 110, pivot + 22.0 * d, (20.0, 8.0, 8.0), arm_dir),
        _ellipsoid(rng, 40, pivot + 44.0 * d + np.array([6.0, 0.0, 0.0]), (9.0, 9.0, 9.0)),
    ])
    axis = np.array([np.sin(np.radians(15.0)), 0.0, np.cos(np.radians(15.0))])
    return _centred(body, [Arm(arm_atoms, pivot, axis)], range_deg)


def arms_molecule(range_deg: float = 40.0) -> Molecule:
    """A core with two arms that move independently (two degrees of freedom).

    Like CODH/ACS in spatial-VAE / TARGET-VAE: a central elongated core with a flexible arm at
    each end. The arms differ in length and head size, so the molecule has no symmetry;
    conformation 1 turns the left arm, conformation 2 the right arm, in opposite senses
    (at most ~60 Å from the centre).
    """
    rng = np.random.default_rng(STRUCTURE_SEED + 1)
    body = np.concatenate([
        _ellipsoid(rng, 200, (0.0, 0.0, 0.0), (22.0, 11.0, 10.0)),
        _ellipsoid(rng, 30, (5.0, -12.0, 0.0), (7.0, 6.0, 7.0)),
    ])
    arms = []
    for pivot, direction, length, head, axis_z in (
        ((-19.0, 5.0, 0.0), 115.0, 30.0, 8.0, 1.0),
        ((19.0, 5.0, 0.0), 55.0, 23.0, 6.0, -1.0),
    ):
        pivot = np.asarray(pivot)
        d = np.array([np.cos(np.radians(direction)), np.sin(np.radians(direction)), 0.0])
        atoms = np.concatenate([
            _ellipsoid(rng, 80, pivot + 0.5 * length * d, (0.5 * length, 5.5, 5.5), direction),
            _ellipsoid(rng, 35, pivot + (length + 0.5 * head) * d, (head, head, head)),
        ])
        axis = np.array([0.0, np.sin(np.radians(10.0)), axis_z * np.cos(np.radians(10.0))])
        arms.append(Arm(atoms, pivot, axis))
    return _centred(body, arms, range_deg)


def trilobe_molecule() -> Molecule:
    """A rigid molecule of three unequal lobes on a bent bridge (no degree of freedom).

    Built from the same ellipsoid blocks as :func:`hinge_molecule`: a large, a middle-sized and
    a small lobe at the corners of a scalene triangle, joined by two rods, so its projection has
    no rotational or mirror symmetry (at most ~50 Å from the centre).
    """
    rng = np.random.default_rng(STRUCTURE_SEED + 2)
    body = np.concatenate([
        _ellipsoid(rng, 150, (-20.0, -12.0, 0.0), (16.0, 13.0, 12.0), 20.0),
        _ellipsoid(rng, 90, (20.0, -14.0, 0.0), (11.0, 9.0, 9.0), -30.0),
        _ellipsoid(rng, 50, (2.0, 24.0, 0.0), (8.0, 8.0, 8.0)),
        _ellipsoid(rng, 70, (0.0, -13.0, 0.0), (14.0, 5.0, 5.0)),
        _ellipsoid(rng, 50, (-8.0, 6.0, 0.0), (13.0, 4.5, 4.5), 65.0),
    ])
    return _centred(body, [], 0.0)


def hook_molecule() -> Molecule:
    """A rigid rod with a bent hook at one end and a knob at the other (no degree of freedom)."""
    rng = np.random.default_rng(STRUCTURE_SEED + 3)
    body = np.concatenate([
        _ellipsoid(rng, 180, (-4.0, 0.0, 0.0), (32.0, 8.0, 8.0)),
        _ellipsoid(rng, 90, (30.0, 14.0, 0.0), (16.0, 6.5, 6.5), 60.0),
        _ellipsoid(rng, 40, (28.0, 32.0, 0.0), (7.0, 7.0, 7.0)),
        _ellipsoid(rng, 60, (-36.0, -5.0, 0.0), (10.0, 10.0, 10.0)),
    ])
    return _centred(body, [], 0.0)


@dataclass(frozen=True)
class ClassSpec:
    """One discrete class of ``cryovae simulate classes``: a molecule frozen in one conformation.

    name : short identifier (``hinge-closed``, ...).  molecule_name : the builder's name
    (``hinge``, ``arms``, ``trilobe``, ``hook``).  molecule : the pseudo-atomic model.
    conformation : (n_dof,) values in [0, 1] the class is frozen at.
    """

    name: str
    molecule_name: str
    molecule: Molecule
    conformation: tuple[float, ...]

    def coordinates(self, n: int) -> np.ndarray:
        """(n, n_atoms, 3) Å: ``n`` copies of the class's atoms."""
        return self.molecule.coordinates(np.tile(np.asarray(self.conformation, np.float64), (n, 1)))

    def describe(self) -> dict:
        """What ``classes.json`` records of the class."""
        return {"name": self.name, "molecule": self.molecule_name, "conformation": list(self.conformation),
                "range_deg": self.molecule.range_deg, "n_atoms": self.molecule.n_atoms}


#: the classes of ``cryovae simulate classes`` in order; ``--classes K`` takes the first K, so
#: every set holds the two conformations of the hinge (classes 1 and 2).
CLASS_NAMES = ("hinge-closed", "hinge-open", "arms", "trilobe", "hook", "arms-bent")


def class_specs(k: int, range_deg: float = 40.0) -> tuple[ClassSpec, ...]:
    """The first ``k`` classes of :data:`CLASS_NAMES` (2 <= k <= 6).

    1 ``hinge-closed``: :func:`hinge_molecule` at conformation 0; 2 ``hinge-open``: the same
    molecule at conformation 1 (its arm turned by ``range_deg``); 3 ``arms``:
    :func:`arms_molecule` with both arms half way (0.5, 0.5); 4 ``trilobe``:
    :func:`trilobe_molecule`; 5 ``hook``: :func:`hook_molecule`; 6 ``arms-bent``: the arms
    molecule with both arms turned (1, 1), a second conformation of class 3.
    """
    if not 1 <= k <= len(CLASS_NAMES):
        raise ValueError(f"k must be in 1..{len(CLASS_NAMES)}, got {k}")
    hinge, arms = hinge_molecule(range_deg), arms_molecule(range_deg)
    specs = (
        ClassSpec("hinge-closed", "hinge", hinge, (0.0,)),
        ClassSpec("hinge-open", "hinge", hinge, (1.0,)),
        ClassSpec("arms", "arms", arms, (0.5, 0.5)),
        ClassSpec("trilobe", "trilobe", trilobe_molecule(), ()),
        ClassSpec("hook", "hook", hook_molecule(), ()),
        ClassSpec("arms-bent", "arms", arms, (1.0, 1.0)),
    )
    return specs[:k]
