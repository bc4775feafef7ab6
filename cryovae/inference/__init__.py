"""Apply trained runs: :class:`TrainedRun`, :func:`encode_stack`, :func:`refine_latents`,
:func:`posterior_latents` (posterior means over a grid), :func:`align_to_one_template` (classical 2D alignment), :func:`recenter_template`, :func:`pick_micrograph` (particles in micrographs), and the star / .cs writers of the results (:mod:`.results`)."""

from cryovae.inference.align2d import Align2DConfig, Alignment, align_to_one_template
from cryovae.inference.encode import (
    encode_images,
    encode_stack,
    encoded_pixel_sizes,
    improve_latents,
    posterior_grid_for,
)
from cryovae.inference.picking import (
    DEFAULT_FOM,
    FOMS,
    MIN_AUTO_THRESHOLD,
    MicrographPicks,
    PickConfig,
    coordinate_columns,
    has_attention,
    pick_micrograph,
)
from cryovae.inference.posterior import PosteriorGrid, PosteriorGridConfig, posterior_latents
from cryovae.inference.recenter import recenter_template, store_template_center
from cryovae.inference.refine import RefineConfig, refine_latents
from cryovae.inference.results import check_output, stack_ctf, write_cs, write_particles, write_star
from cryovae.inference.trained_run import TrainedRun
from cryovae.runs import Latents

__all__ = ["Align2DConfig", "Alignment", "align_to_one_template", "DEFAULT_FOM", "FOMS", "Latents", "MIN_AUTO_THRESHOLD", "MicrographPicks", "PickConfig",
           "coordinate_columns", "has_attention", "pick_micrograph", "RefineConfig", "TrainedRun", "check_output", "encode_images", "encode_stack",
           "encoded_pixel_sizes", "improve_latents", "posterior_grid_for", "PosteriorGrid", "PosteriorGridConfig",
           "posterior_latents", "recenter_template", "refine_latents", "stack_ctf", "store_template_center",
           "write_cs", "write_particles", "write_star"]
