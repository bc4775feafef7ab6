"""Pin the internal coordinate convention and its mapping to RELION's psi/origin."""

import numpy as np
import pytest

from cryovae.geometry import (
    apply_relion_alignment,
    internal_to_relion,
    pixel_coordinates,
    relion_to_internal,
    rotation_matrix,
    transform_image,
    wrap_degrees,
)


def asymmetric_template(box: int) -> np.ndarray:
    """An L-shaped blob pair: no rotational or mirror symmetry."""
    p = pixel_coordinates(box).reshape(box, box, 2)
    blobs = [((0.0, 0.0), 3.0, 1.0), ((6.0, 0.0), 2.0, 0.7), ((0.0, -8.0), 2.0, 0.5)]
    img = np.zeros((box, box), np.float32)
    for (x, y), s, a in blobs:
        img += a * np.exp(-((p[..., 0] - x) ** 2 + (p[..., 1] - y) ** 2) / (2 * s**2))
    return img


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_pixel_coordinates_layout():
    box = 6
    p = pixel_coordinates(box).reshape(box, box, 2)
    assert tuple(p[3, 3]) == (0.0, 0.0)  # centre is N//2
    assert tuple(p[0, 5]) == (2.0, -3.0)  # x along columns, y along rows (down)


def test_rotation_is_counterclockwise_in_xy():
    r = rotation_matrix(np.pi / 2)
    np.testing.assert_allclose(r @ np.array([1.0, 0.0]), [0.0, 1.0], atol=1e-12)


def test_zero_pose_is_identity():
    t = asymmetric_template(32)
    np.testing.assert_allclose(transform_image(t, 0.0, (0.0, 0.0)), t, atol=1e-5)


def test_shift_moves_particle_centre_to_c():
    box = 32
    t = asymmetric_template(box)
    moved = transform_image(t, 0.0, (3.0, -2.0))
    # the brightest blob (template centre) now sits at col N//2+3, row N//2-2
    row, col = np.unravel_index(np.argmax(moved), moved.shape)
    assert (row, col) == (box // 2 - 2, box // 2 + 3)


@pytest.mark.parametrize("box", [32, 33])
@pytest.mark.parametrize("theta_deg,c", [(37.0, (2.5, -1.5)), (-120.0, (-3.0, 4.0)), (100.0, (0.0, 2.0))])
def test_relion_alignment_undoes_internal_pose(box, theta_deg, c):
    """RELION's transform, fed only psi/origin from internal_to_relion, lands on the template."""
    t = asymmetric_template(box)
    particle = transform_image(t, np.radians(theta_deg), c)
    psi, origin = internal_to_relion(np.array([np.radians(theta_deg)]), np.array([c]))
    aligned = apply_relion_alignment(particle, float(psi[0]), origin[0])
    assert ncc(aligned, t) > 0.99
    # and the wrong sign of psi (a common bug) does not
    wrong = apply_relion_alignment(particle, -float(psi[0]), origin[0])
    assert ncc(wrong, t) < 0.9


def test_relion_round_trip_and_wrapping():
    theta = np.radians([10.0, 190.0, -540.0])
    c = np.array([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0]])
    psi, origin = internal_to_relion(theta, c)
    np.testing.assert_allclose(psi, [10.0, -170.0, 180.0])
    np.testing.assert_allclose(origin, -c)
    theta2, c2 = relion_to_internal(psi, origin)
    np.testing.assert_allclose(np.cos(theta2), np.cos(theta), atol=1e-12)
    np.testing.assert_allclose(c2, c)
    assert wrap_degrees(-180.0) == 180.0
