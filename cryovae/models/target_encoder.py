"""TARGET-VAE inference network: group convolutions giving, at every pixel t and discrete
rotation r, an attention logit and the posterior of theta and z.

The encoder is built from e2cnn: a lifting ``R2Conv`` (trivial -> regular fields of C_N, odd
kernel, padding kernel//2 so the output grid *is* the pixel grid), ReLU, ``enc_layers``
regular -> regular ``R2Conv``, then a pointwise ``R2Conv`` to ``3 + prior.n_outputs`` regular
fields: attention, theta offset mean, theta log std, and the z posterior (means, log stds). Each regular field has N
channels indexed by r.

Channel order (measured, pinned by tests/test_models_equivariance.py): turning the input by
+2 pi/N in the internal convention (``np.rot90`` is +90 deg) moves channel r to r + 1, so the
rotation offset of channel r is ``+2 pi r / N``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len
from torch import nn

warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)

from e2cnn import gspaces  # noqa: E402
from e2cnn import nn as enn  # noqa: E402

from cryovae.models.priors import LatentPrior  # noqa: E402


@dataclass
class GroupPosterior:
    """Posterior parameters over every (r, t) cell; shapes use N rotations and an H x W grid.

    Attributes
    ----------
    logits : (B, N, H, W) attention logits; q(t, r | y) = softmax over all N*H*W cells.
    theta_delta : (B, N, H, W) predicted theta mean relative to the cell's offset, radians.
    theta_logstd : (B, N, H, W) log std of theta, log radians.
    z_mu, z_logstd : (B, zdim, N, H, W) content posterior.
    """

    logits: torch.Tensor
    theta_delta: torch.Tensor
    theta_logstd: torch.Tensor
    z_mu: torch.Tensor
    z_logstd: torch.Tensor


def make_gspace(n_rotations: int):
    """``Rot2dOnR2(N)`` (N > 1)."""
    return gspaces.Rot2dOnR2(n_rotations)


def fft_conv2d_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    kernel_fft: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=k//2)`` for one input channel, computed with FFTs.

    x : (B, 1, H, W).  weight : (C, 1, k, k) with odd k.  bias : (C,) or None.
    Returns (B, C, H, W). Equal to the direct cross-correlation up to float rounding; cost
    O(C H W log) instead of O(C H W k^2), the win for a large image (a micrograph tile).
    kernel_fft(weight, (lh, lw)) : the flipped kernel's rfft2 at that size, when the caller keeps
        it between calls (None: computed here).

    Output ``i`` of a circular convolution of length L sums the flipped kernel at the offsets
    ``i + p - j`` (p = k//2, j over the H input rows); it is the linear one when no offset wraps
    into the kernel's support, which for outputs ``0 <= i < H`` needs ``L >= H + p`` (not the
    ``H + k - 1`` of the full linear convolution).
    """
    b, _, h, w = x.shape
    c, _, k, _ = weight.shape
    p = k // 2
    # a 5-smooth size is fast (an image side with a large prime factor, e.g. a micrograph tile,
    # would be several times slower)
    lh, lw = next_fast_len(h + p), next_fast_len(w + p)
    fx = torch.fft.rfft2(x.float(), s=(lh, lw))
    fk = kernel_rfft2(weight, (lh, lw)) if kernel_fft is None else kernel_fft(weight, (lh, lw))
    full = torch.fft.irfft2(fx * fk[:, 0][None], s=(lh, lw))
    out = full[..., p: p + h, p: p + w]
    return out if bias is None else out + bias.float()[None, :, None, None]


def window_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  window: tuple[int, int, int, int]) -> torch.Tensor:
    """Rows ``r0:r1`` and columns ``c0:c1`` of ``F.conv2d(x, weight, bias, padding=k//2)``: a
    direct convolution of only the input those outputs read.

    x : (B, Cin, H, W).  weight : (C, Cin, k, k), odd k.  bias : (C,) or None.
    window : ``(r0, r1, c0, c1)``.  Returns (B, C, r1 - r0, c1 - c0).

    For the training-time translation window this is several times faster than FFTs of the
    whole image, forward and backward (``benchmarks/train_throughput.py --lift``).
    """
    r0, r1, c0, c1 = window
    p = weight.shape[-1] // 2
    padded = F.pad(x, (p, p, p, p))[..., r0: r1 + 2 * p, c0: c1 + 2 * p]
    return F.conv2d(padded, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


def kernel_rfft2(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """rfft2 of the flipped (C, 1, k, k) kernel zero-padded to ``size``: (C, 1, lh, lw//2+1)."""
    return torch.fft.rfft2(torch.flip(weight.float(), dims=(-2, -1)), s=size)


class GroupAttentionEncoder(nn.Module):
    """Lifting + regular group convolutions -> :class:`GroupPosterior`.

    For N == 1 (``c1``, the translation-only ablation) the same layers are ordinary ``Conv2d``
    (the trivial group's equivariance constraint is empty).

    Parameters
    ----------
    n_rotations : N of C_N (1 = translation only).
    prior : the content prior (:class:`cryovae.models.priors.LatentPrior`): the encoder outputs
        its ``n_outputs`` numbers per cell and :meth:`LatentPrior.split` makes them (mu, logstd).
    fields : hidden regular fields (each N channels).
    kernel : odd lifting kernel size, pixels.
    layers : regular -> regular convolutions after the lifting one.
    inner_kernel : their odd kernel size.
    fft_lift : compute the lifting convolution with FFTs (same result, faster for large kernels).
    max_shift : keep only the translations ``|x|, |y| <= max_shift`` pixels of the lifting output
        (a centred square window of the pixel grid; None = the whole grid). The later layers and
        the posterior then live on ``(2 max_shift + 1)^2`` cells. The window is symmetric about
        pixel N//2, so 90-degree turns and the rotation channels stay exact.
    """

    def __init__(self, n_rotations: int, prior: LatentPrior, fields: int, kernel: int, layers: int,
                 inner_kernel: int = 1, fft_lift: bool = True, max_shift: int | None = None) -> None:
        super().__init__()
        self.n_rotations, self.fft_lift = n_rotations, fft_lift
        self.kernel, self.layers, self.inner_kernel = kernel, layers, inner_kernel
        self.split_z = prior.split
        self.max_shift = max_shift
        self.n_out = 3 + prior.n_outputs
        if n_rotations == 1:
            # c1: the trivial group's steerable basis is the full basis, i.e. ordinary convolutions
            layers_: list[nn.Module] = [nn.Conv2d(1, fields, kernel, padding=kernel // 2), nn.ReLU()]
            for _ in range(layers):
                layers_ += [nn.Conv2d(fields, fields, inner_kernel, padding=inner_kernel // 2), nn.ReLU()]
            layers_.append(nn.Conv2d(fields, self.n_out, 1))
            self.plain = nn.Sequential(*layers_)
            return
        self.plain = None
        gs = make_gspace(n_rotations)
        self.in_type = enn.FieldType(gs, [gs.trivial_repr])
        hidden = enn.FieldType(gs, fields * [gs.regular_repr])
        self.lift = enn.R2Conv(self.in_type, hidden, kernel_size=kernel, padding=kernel // 2)
        blocks: list[enn.EquivariantModule] = [enn.ReLU(hidden)]
        for _ in range(layers):
            blocks += [enn.R2Conv(hidden, hidden, kernel_size=inner_kernel, padding=inner_kernel // 2),
                       enn.ReLU(hidden)]
        self.body = enn.SequentialModule(*blocks)
        out_type = enn.FieldType(gs, self.n_out * [gs.regular_repr])
        self.head = enn.R2Conv(hidden, out_type, kernel_size=1)

    def offsets(self, device=None) -> torch.Tensor:
        """(N,) rotation offset of each channel r, ``2 pi r / N`` wrapped to (-pi, pi] radians
        (the wrap keeps mixtures and straight-through gradients of neighbouring r local)."""
        r = torch.arange(self.n_rotations, device=device, dtype=torch.float64)
        off = r * (2 * math.pi / self.n_rotations)
        off = math.pi - torch.remainder(math.pi - off, 2 * math.pi)
        return off.to(torch.float32)

    def lift_filter(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The lifting convolution's (C, 1, k, k) filter and (C,) bias as the layer would use them
        (e2cnn expands them from its steerable basis in training mode, caches them in eval mode)."""
        if self.plain is not None:
            conv = self.plain[0]
            return conv.weight, conv.bias
        if self.lift.training:
            return self.lift.expand_parameters()
        return self.lift.filter, self.lift.expanded_bias

    def _cached_kernel_fft(self, weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """:func:`kernel_rfft2` kept between calls of the same size (eval, no grad: the tiles of a
        micrograph share it); dropped when the filter changes."""
        cached = getattr(self, "_kernel_fft", None)  # (weight, its version, size, fft)
        if cached is None or cached[0] is not weight or cached[1] != weight._version or cached[2] != size:
            cached = (weight, weight._version, size, kernel_rfft2(weight, size))
            self._kernel_fft = cached
        return cached[3]

    def lift_forward(self, images: torch.Tensor, window: bool = False) -> torch.Tensor:
        """The lifting convolution alone: (B, H, W) -> (B, fields*N, H, W); with ``window`` only
        the training-time translation window (:meth:`window_bounds`) of the output, computed
        directly; otherwise over the whole image, with FFTs when ``fft_lift``."""
        bounds = self.window_bounds(images.shape[-2], images.shape[-1]) if window else None
        if bounds is not None or self.fft_lift:
            weight, bias = self.lift_filter()
            if bounds is not None:
                return window_conv2d(images[:, None], weight, bias, bounds)
            cache = None if self.training or torch.is_grad_enabled() else self._cached_kernel_fft
            return fft_conv2d_same(images[:, None], weight, bias, cache)
        if self.plain is not None:
            return self.plain[0](images[:, None])
        return self.lift(enn.GeometricTensor(images[:, None], self.in_type)).tensor

    def window_bounds(self, h: int, w: int) -> tuple[int, int, int, int] | None:
        """``(r0, r1, c0, c1)`` of the translation window ``|x|, |y| <= max_shift`` about pixel
        ``(h//2, w//2)`` (None without ``max_shift``)."""
        if self.max_shift is None:
            return None
        ch, cw, m = h // 2, w // 2, self.max_shift
        return max(ch - m, 0), min(ch + m + 1, h), max(cw - m, 0), min(cw + m + 1, w)

    @property
    def context_px(self) -> int:
        """Half the receptive field in pixels: an output cell depends on the input pixels at most
        this far away (the lifting kernel's half-width plus the inner kernels')."""
        return self.kernel // 2 + self.layers * (self.inner_kernel // 2)

    def forward(self, images: torch.Tensor, window: bool = True) -> GroupPosterior:
        """(B, H, W) images -> posterior over every (r, t).

        window : keep only the training-time translation window (``max_shift``); False gives
            every pixel of an image of any size (the attention map of a micrograph).
        """
        x = self.lift_forward(images, window=window)
        if self.plain is not None:
            x = self.plain[1:](x)
        else:
            x = self.head(self.body(enn.GeometricTensor(x, self.lift.out_type))).tensor
        b, _, h, w = x.shape
        x = x.reshape(b, self.n_out, self.n_rotations, h, w).float()
        z_mu, z_logstd = self.split_z(x[:, 3:], dim=1)
        return GroupPosterior(logits=x[:, 0], theta_delta=x[:, 1], theta_logstd=x[:, 2],
                              z_mu=z_mu, z_logstd=z_logstd)
