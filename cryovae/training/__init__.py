"""Training: the trainer (:func:`fit`) over a :class:`cryovae.data.ParticleDataset`, for any
registered model, writing through a :class:`cryovae.runs.RunDir`."""

from cryovae.training.loop import (
    FitResult,
    fit,
    fit_images,
    make_optimizer,
    seeded_model,
    weights_finite,
)

__all__ = ["FitResult", "fit", "fit_images", "make_optimizer", "seeded_model", "weights_finite"]
