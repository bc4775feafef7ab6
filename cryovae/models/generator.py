"""Spatial generator: an MLP of the (rotated, shifted) pixel coordinate and the content z.

Pose enters only through the coordinates, in the internal convention of
:mod:`cryovae.geometry`: the image of a particle with rotation ``theta`` and centre ``c`` is
``image(p) = g((R(theta) (p - c) + m) / (box/2), z)``.

``m`` is the generator's ``template_center`` buffer (model pixels, template frame; 0 while
training): where the trained network happened to put the particle's centre in its pose-free image
``g(p / (box/2), z)``. With it, the pose-free decode ``(theta, c) = (0, 0)`` is centred on the box
and ``c`` is the particle's centre in the image. The encoders read poses in the network's own
(un-centred) frame; :meth:`SpatialGenerator.centred_pose` turns such a centre ``c`` into
``c + R(-theta) m``, which renders the identical image. This module is the only place that knows
about ``m`` (set by :func:`cryovae.inference.recenter_template`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cryovae.geometry import pixel_coordinates


def make_activation(name: str) -> nn.Module:
    """``"relu"``, ``"leaky_relu"`` or ``"tanh"`` as a module."""
    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "tanh": nn.Tanh}[name]()


def pose_coordinates(coords: torch.Tensor, theta: torch.Tensor, center_px: torch.Tensor, box: int,
                     template_center: torch.Tensor | None = None) -> torch.Tensor:
    """Template coordinates ``u = (R(theta) (p - c) + m) / (box/2)`` of every pixel.

    Parameters
    ----------
    coords : (P, 2) pixel coordinates ``(x, y)`` (see :func:`cryovae.geometry.pixel_coordinates`).
    theta : (B,) rotation in radians.
    center_px : (B, 2) particle centre ``(cx, cy)`` in pixels.
    box : image size in pixels.
    template_center : (2,) ``m``, the network's template centre in pixels (None: 0).

    Returns
    -------
    (B, P, 2) normalised coordinates (the box half-width is 1).
    """
    q = coords[None, :, :] - center_px[:, None, :]
    cos, sin = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    ux = cos * q[..., 0] - sin * q[..., 1]
    uy = sin * q[..., 0] + cos * q[..., 1]
    if template_center is not None:
        ux = ux + template_center[0]
        uy = uy + template_center[1]
    return torch.stack([ux, uy], dim=-1) / (box / 2)


class SpatialGenerator(nn.Module):
    """Coordinate MLP ``g(u, z) -> pixel mean (and log sigma when noise == "pixel")``.

    The first layer is ``W_u feat(u) + W_z z + b`` with ``W_z z`` computed once per image, which is
    the same as concatenating ``feat(u)`` and ``z`` but cheaper. ``feat(u)`` is
    ``[sin 2 pi B u, cos 2 pi B u]`` with a fixed Gaussian ``B`` (random Fourier features, as in
    TARGET-VAE) or ``u`` itself when ``fourier_features == 0`` (spatial-VAE).

    Parameters
    ----------
    box : image size in pixels.
    zdim : content dimensions (0 allowed).
    hidden, layers : width and number of hidden layers.
    fourier_features, fourier_scale : number of frequencies and their std (cycles per unit).
    activation : "relu", "leaky_relu" or "tanh".
    pixel_noise : also output a per-pixel log sigma.

    Buffers: ``coords``, ``freqs`` and ``template_center`` (2,) ``m`` in pixels (see the
    module docstring; 0 until :func:`cryovae.inference.recenter_template` sets it; a state dict saved
    before it existed loads with 0).
    """

    def __init__(self, box: int, zdim: int, hidden: int, layers: int, fourier_features: int,
                 fourier_scale: float, activation: str, pixel_noise: bool) -> None:
        super().__init__()
        self.box, self.zdim, self.pixel_noise = box, zdim, pixel_noise
        self.register_buffer("coords", torch.from_numpy(pixel_coordinates(box)))
        self.register_buffer("template_center", torch.zeros(2))
        if fourier_features > 0:
            gen = torch.Generator().manual_seed(0)
            freqs = torch.randn(fourier_features, 2, generator=gen) * fourier_scale
            self.register_buffer("freqs", freqs)
            in_dim = 2 * fourier_features
        else:
            self.freqs = None
            in_dim = 2
        self.coord_in = nn.Linear(in_dim, hidden)
        self.z_in = nn.Linear(zdim, hidden, bias=False) if zdim > 0 else None
        body: list[nn.Module] = [make_activation(activation)]
        for _ in range(layers - 1):
            body += [nn.Linear(hidden, hidden), make_activation(activation)]
        body.append(nn.Linear(hidden, 2 if pixel_noise else 1))
        self.body = nn.Sequential(*body)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # checkpoints written before template_center existed: their template is un-centred (m = 0)
        state_dict.setdefault(prefix + "template_center", torch.zeros(2))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def centred_pose(self, theta: torch.Tensor, center_px: torch.Tensor) -> torch.Tensor:
        """The centre ``c + R(-theta) m`` that renders, with ``m``, what ``(theta, c)`` rendered in the
        network's un-centred frame (an encoder's reading).

        theta : (B,) radians.  center_px : (B, 2) pixels.  Returns (B, 2) pixels.
        """
        m = self.template_center.to(center_px.dtype)
        cos, sin = torch.cos(theta).to(center_px.dtype), torch.sin(theta).to(center_px.dtype)
        # R(-theta) m = (cos mx + sin my, -sin mx + cos my)
        return center_px + torch.stack([cos * m[0] + sin * m[1], -sin * m[0] + cos * m[1]], dim=-1)

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates -> (..., in_dim) input features."""
        if self.freqs is None:
            return u
        a = (2 * math.pi) * (u @ self.freqs.T)
        return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)

    def forward(self, z: torch.Tensor | None, theta: torch.Tensor, center_px: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Render images.

        Parameters
        ----------
        z : (B, zdim) content, or None when zdim == 0.
        theta : (B,) radians.  center_px : (B, 2) pixels.

        Returns
        -------
        mean : (B, box, box) pixel means.
        log_sigma : (B, box, box) per-pixel log std, or None for the global noise model.
        """
        mean, log_sigma = self.render_pixels(z, theta, center_px)
        shape = (theta.shape[0], self.box, self.box)
        return mean.reshape(shape), None if log_sigma is None else log_sigma.reshape(shape)

    def render_pixels(self, z: torch.Tensor | None, theta: torch.Tensor, center_px: torch.Tensor,
                      pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Render only some pixels of each image (the network runs on those alone).

        z : (B, zdim) or None.  theta : (B,) radians.  center_px : (B, 2) pixels.
        pixels : (P,) int64 indices into the row-major flattened box (None: every pixel).

        Returns
        -------
        mean : (B, P).  log_sigma : (B, P), or None for the global noise model.
        """
        codes = None if z is None or self.z_in is None else z[:, None, :]
        out = self._render(codes, theta, center_px, pixels)[:, 0]
        return out[..., 0], (out[..., 1] if self.pixel_noise else None)

    def render_codes(self, codes: torch.Tensor, theta: torch.Tensor, center_px: torch.Tensor,
                     pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Render K latent codes per pose, sharing the pose's coordinate features (a class model
        renders every class at a particle's pose this way; the posterior grid renders its z values
        at each rotation).

        codes : (B, K, zdim).  theta : (B,) radians.  center_px : (B, 2) pixels.
        pixels : (P,) int64 row-major pixel indices to render (None: every pixel).

        Returns
        -------
        mean : (B, K, box, box), or (B, K, P) with ``pixels``.  log_sigma : the same shape, or
        None (global noise).
        """
        b, k = codes.shape[:2]
        shape = (b, k, self.box, self.box) if pixels is None else (b, k, len(pixels))
        out = self._render(codes, theta, center_px, pixels).reshape(*shape, -1)
        if self.pixel_noise:
            return out[..., 0], out[..., 1]
        return out[..., 0], None

    def _render(self, codes: torch.Tensor | None, theta: torch.Tensor, center_px: torch.Tensor,
                pixels: torch.Tensor | None) -> torch.Tensor:
        """(B, K, P, 1 or 2) network outputs for K codes (B, K, zdim) per pose (None: K = 1, no z)
        at the pixels ``pixels`` (None: all)."""
        coords = self.coords if pixels is None else self.coords[pixels]
        u = pose_coordinates(coords, theta, center_px, self.box, self.template_center)
        h = self.coord_in(self.features(u))[:, None]  # (B, 1, P, hidden)
        if codes is not None and self.z_in is not None:
            h = h + self.z_in(codes)[:, :, None, :]
        return self.body(h)
