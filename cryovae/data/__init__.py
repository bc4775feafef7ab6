"""cryovae.data: preprocessing of particle images (Fourier crop, invert, normalise, mask), and
the preprocessed particles as a dataset with a seeded sampler."""

from cryovae.data.dataset import (
    LoaderConfig,
    ParticleDataset,
    SeededSampler,
    batch_loader,
    epoch_seed,
)
from cryovae.data.extent import SignalExtent, signal_radius
from cryovae.data.fourier import check_crop_box, cropped_pixel_size, fourier_crop, fourier_resample
from cryovae.data.preprocess import (
    NORMALIZE_MODES,
    ConstantImages,
    PreprocessConfig,
    check_finite,
    normalize_images,
    preprocess_images,
    soft_circular_mask,
)
from cryovae.data.stack_files import (
    PreprocessResult,
    preprocess_chunks,
    preprocess_particle_file,
    preprocess_stack,
)

__all__ = [
    "NORMALIZE_MODES",
    "SignalExtent",
    "signal_radius",
    "LoaderConfig",
    "ParticleDataset",
    "SeededSampler",
    "batch_loader",
    "epoch_seed",
    "preprocess_chunks",
    "preprocess_stack",
    "ConstantImages",
    "PreprocessConfig",
    "PreprocessResult",
    "check_crop_box",
    "check_finite",
    "cropped_pixel_size",
    "fourier_crop",
    "fourier_resample",
    "normalize_images",
    "preprocess_images",
    "preprocess_particle_file",
    "soft_circular_mask",
]
