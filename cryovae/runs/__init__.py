"""cryovae.runs: what a run keeps on disk, and the objects that read and write it.

:class:`RunDir` owns the run directory's files; :class:`RunConfig` / :class:`TrainConfig` are
its config.yaml; :class:`Latents` its latents.npz. It sits above :mod:`cryovae.models` (a run
rebuilds its model) and below :mod:`cryovae.training` and :mod:`cryovae.inference`, which both
go through it.
"""

from cryovae.runs.checkpoint import load_checkpoint, load_model_state, model_state, save_atomic
from cryovae.runs.config import RUN_FORMAT, RunConfig, read_run_config, write_run_config
from cryovae.runs.latents import Latents
from cryovae.runs.rundir import RunDir, images_cache_key
from cryovae.runs.train_config import TrainConfig

__all__ = ["RUN_FORMAT", "Latents", "RunConfig", "RunDir", "TrainConfig", "images_cache_key", "load_checkpoint",
           "load_model_state", "model_state", "read_run_config", "save_atomic", "write_run_config"]
