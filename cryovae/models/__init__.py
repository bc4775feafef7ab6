"""Models: the contract (:class:`PoseVAE`), the registry, the priors and the networks.

Other layers use only what is re-exported here::

    from cryovae.models import model_config, build_model
    model = build_model(model_config("target", box=40, zdim=1))
    terms = model(images)            # LossTerms (the ELBO's parts, per particle)
    enc = model.infer(images)        # Encoding (pose, z, prob, extras)
"""

from cryovae.models.base import (
    CLASS_EXTRA,
    CLASS_PROB_EXTRA,
    ROTATION_GUIDE,
    AttentionMap,
    Encoding,
    LossTerms,
    ModelConfig,
    PoseVAE,
    RotationGuide,
    option,
    wrap_angle,
)
from cryovae.models.ctf import (
    CTF_COLUMNS,
    apply_ctf,
    check_ctf_finite,
    compute_ctf,
    ctf_parameters,
)
from cryovae.models.generator import SpatialGenerator
from cryovae.models.mce_vae import MCEVAE, MCEConfig, se2_exp, warp_images
from cryovae.models.priors import GaussianMixturePrior, LatentPrior, StandardNormalPrior
from cryovae.models.registry import (
    build_model,
    config_from_dict,
    model_class,
    model_classes,
    model_config,
    model_names,
    paper_config,
    register_model,
    unregister_model,
)
from cryovae.models.spatial_vae import SpatialConfig, SpatialVAE
from cryovae.models.target_vae import TargetConfig, TargetVAE
from cryovae.models.transforms import rotate_images
from cryovae.models.tvae import TVAE, TVAEConfig

__all__ = [
    "AttentionMap", "CLASS_EXTRA", "CLASS_PROB_EXTRA", "CTF_COLUMNS", "Encoding", "GaussianMixturePrior", "LatentPrior", "LossTerms",
    "MCEConfig", "MCEVAE", "ModelConfig", "PoseVAE", "ROTATION_GUIDE", "RotationGuide", "SpatialConfig",
    "SpatialGenerator", "SpatialVAE", "StandardNormalPrior", "TVAE", "TVAEConfig", "TargetConfig", "TargetVAE", "apply_ctf",
    "build_model", "check_ctf_finite", "compute_ctf", "config_from_dict", "ctf_parameters", "model_class",
    "model_classes", "model_config", "model_names", "option", "paper_config", "register_model",
    "rotate_images", "se2_exp", "unregister_model", "warp_images", "wrap_angle",
]
