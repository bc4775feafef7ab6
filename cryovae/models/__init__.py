"""Networks: TARGET-VAE and spatial-VAE encoders, the spatial generator, the CTF, configs."""

from cryovae.models.config import ModelConfig, paper_config
from cryovae.models.ctf import CTF_COLUMNS, apply_ctf, compute_ctf, ctf_parameters
from cryovae.models.generator import SpatialGenerator
from cryovae.models.transforms import rotate_images
from cryovae.models.vae import Encoding, SpatialVAE, TargetVAE, build_model, wrap_angle

__all__ = [
    "CTF_COLUMNS", "Encoding", "ModelConfig", "SpatialGenerator", "SpatialVAE", "TargetVAE",
    "apply_ctf", "build_model", "compute_ctf", "ctf_parameters", "paper_config", "rotate_images",
    "wrap_angle",
]
