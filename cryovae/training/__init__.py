"""Training: ELBO terms, the loop, checkpoints and the run directory."""

from cryovae.training.config import TrainConfig
from cryovae.training.device import resolve_device
from cryovae.training.loop import FitResult, fit
from cryovae.training.rundir import RunConfig, read_run_config, write_run_config

__all__ = ["FitResult", "RunConfig", "TrainConfig", "fit", "read_run_config", "resolve_device",
           "write_run_config"]
