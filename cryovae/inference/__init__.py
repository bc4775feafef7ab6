"""Apply trained runs: :class:`TrainedRun`, :func:`encode_stack`, :class:`Latents`."""

from cryovae.inference.encode import encode_images, encode_stack
from cryovae.inference.latents import Latents
from cryovae.inference.trained_run import TrainedRun

__all__ = ["Latents", "TrainedRun", "encode_images", "encode_stack"]
