"""Frozen training configuration (saved in RUNDIR/config.yaml)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cryovae.errors import CryovaeError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation options.

    Attributes
    ----------
    epochs : maximum number of epochs.
    batch_size : particles per step.
    lr : Adam learning rate.
    seed : seeds the initial weights, the split, the data order and every sample.
    val_fraction : fraction of particles held out for validation (0 = none; early stopping and
        the LR schedule then follow the training ELBO).
    lr_factor, lr_patience : ReduceLROnPlateau on the validation ELBO.
    early_stop_patience : stop after this many epochs without a better validation ELBO (0 = never).
    z_delay_epochs : feed z = 0 to the generator for the first epochs (spatial-VAE's z-delay);
        the LR schedule, early stopping and best.pt start once z is on. None (the default): until
        the rotations have settled, the first epoch (at least the second) after which the
        validation particles' rotations moved by a median of at most ``settle_deg`` since the
        epoch before, and at most ``z_delay_max`` epochs.
    settle_deg, z_delay_max : that criterion (degrees) and its longest delay (epochs).
    free_nats : free bits of the content latent, nats per z dimension: training counts the
        batch's mean KL of each z dimension as at least this (the total, for a model that does
        not split its KL of z by dimension; :meth:`cryovae.models.LossTerms.objective`; 0 = the
        ELBO itself; None, the default: the model's ``free_nats_default``). The ELBO reported,
        and watched by the LR schedule and early stopping, is always the true one.
    rotate_encoder : random rotation augmentation of the spatial-VAE encoder input.
    amp : bfloat16 autocast on CUDA (ignored on CPU).
    sigma_lr_scale : learning-rate multiplier of the global noise log sigma.
    refine_steps : after training, Adam steps of the per-particle refinement of pose and z on the
        trained generator (:mod:`cryovae.inference.refine`; 0 = the encoder's values).
    posterior_grid : then report each particle's z, rotation and centre as posterior means over
        a grid of z values x rotations x sub-pixel shifts (:mod:`cryovae.inference.posterior`;
        models with ``posterior_grid`` and 1 or 2 z dimensions; others keep the refined point).
    align_rotations : before training, align the particles to one template by EM
        (:mod:`cryovae.inference.align2d`) on a grid of this many rotations, and let each
        particle's rotation there (with its posterior std) guide the encoder's rotation posterior
        (:class:`cryovae.models.RotationGuide`; models with ``rotation_guidance``). 0: no alignment.
        At SNR 0.1 the default runs lost the two-arm rotation without it (docs/models.md).
    guide_epochs : the epochs the guide acts in (None: every epoch).
    guide_weight : the guide's weight against the ELBO (:class:`cryovae.models.RotationGuide`).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.1
    lr_factor: float = 0.5
    lr_patience: int = 3
    early_stop_patience: int = 8
    z_delay_epochs: int | None = None
    settle_deg: float = 2.0
    z_delay_max: int = 10
    free_nats: float | None = None
    rotate_encoder: bool = False
    amp: bool = True
    sigma_lr_scale: float = 100.0
    refine_steps: int = 10
    posterior_grid: bool = True
    align_rotations: int = 36
    guide_epochs: int | None = None
    guide_weight: float = 10.0

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CryovaeError(f"train config has unknown keys: {', '.join(sorted(unknown))}")
        # a run written before the posterior grid existed reported the refined point: encoding it
        # again gives what it wrote
        # ... and one written before the 2D alignment trained without it
        return cls(**{"posterior_grid": False, "align_rotations": 0, **d})

    def validate(self) -> None:
        if self.epochs < 1:
            raise CryovaeError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise CryovaeError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise CryovaeError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise CryovaeError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.free_nats is not None and not self.free_nats >= 0:
            raise CryovaeError(f"--free-nats must be >= 0, got {self.free_nats}")
        if not self.settle_deg > 0:
            raise CryovaeError(f"the settling threshold must be > 0 degrees, got {self.settle_deg}")
        if (self.z_delay_epochs or 0) < 0 or self.z_delay_max < 0 or self.early_stop_patience < 0 or self.lr_patience < 0:
            raise CryovaeError("z-delay and patience values must be >= 0")
        if self.align_rotations < 0 or 0 < self.align_rotations < 4:
            raise CryovaeError(f"--align-rotations must be 0 (no alignment) or >= 4, got {self.align_rotations}")
        if not self.guide_weight >= 0:
            raise CryovaeError(f"--guide-weight must be >= 0, got {self.guide_weight}")
        if self.guide_epochs is not None and self.guide_epochs < 0:
            raise CryovaeError(f"--guide-epochs must be >= 0, got {self.guide_epochs}")
        if self.refine_steps < 0:
            raise CryovaeError(f"--refine-steps must be >= 0, got {self.refine_steps}")
