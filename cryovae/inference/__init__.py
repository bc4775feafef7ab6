"""Apply trained runs: :class:`TrainedRun`, :func:`encode_stack`, :class:`Latents`,
:func:`refine_latents`, :func:`recenter_template`."""

from cryovae.inference.encode import encode_images, encode_stack
from cryovae.inference.latents import Latents
from cryovae.inference.recenter import recenter_template
from cryovae.inference.refine import RefineConfig, refine_latents
from cryovae.inference.trained_run import TrainedRun

__all__ = ["Latents", "RefineConfig", "TrainedRun", "encode_images", "encode_stack", "recenter_template",
           "refine_latents"]
