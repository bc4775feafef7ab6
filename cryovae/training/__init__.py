"""Training: the trainer (:func:`fit`) over a :class:`cryovae.data.ParticleDataset`, for any
registered model, writing through a :class:`cryovae.runs.RunDir`."""

from cryovae.training.fixed_pose import FixedPoseConfig, fit_fixed_pose
from cryovae.training.loop import (
    FitResult,
    fit,
    fit_images,
    make_optimizer,
    seeded_model,
    weights_finite,
)

__all__ = ["FitResult", "FixedPoseConfig", "fit", "fit_fixed_pose", "fit_images", "make_optimizer", "seeded_model", "weights_finite"]
