"""``cryovae reframe``: a trained run's rotations moved onto the molecule's rigid part, z refitted.

On a molecule whose parts move (two arms on a core), ``cryovae train``'s rotation turns with the
parts' common motion and z misses that motion: the ELBO prefers that frame (docs/models.md,
"Accuracy"). This workflow, with no truth, alternates ``rounds`` times:

1. decode every particle's template from its z (pose-free), find the rigid part
   (:func:`cryovae.inference.core_frame.rigid_weight`) and turn each particle by the ``delta`` that
   aligns it on that part (:func:`~cryovae.inference.core_frame.realign`);
2. train the encoder and generator ``epochs`` epochs with each rotation held there
   (:func:`cryovae.training.fit_fixed_pose`), and read z at it
   (:func:`~cryovae.inference.core_frame.z_at_pose`).

Before the first round the search is repeated on two halves of the pixels: when the two halves'
turns agree less than ``min_agreement`` (correlation over the particles) the data do not
determine the turn (low SNR, a small rigid part) and nothing is written: one line says so.

The result is a new run folder ``out`` (the source run is only read): config.yaml, images.npy
(a hard link to the source's when the disk allows), best.pt (the refitted weights), latents.npz,
particles.star (+ .cs/.csg for a cryoSPARC input), reframe.json (the options, the agreement, each
round's median turn and -ELBO) and train.log. Centres are kept; psi is the new rotation; z is the
encoder's at it (no refinement or posterior grid). ``cryovae traverse``, ``analyze``, ``select``
and napari read it like any run; ``cryovae encode`` and ``train --resume`` refuse it (its attention over
rotations was not retrained: new particles are encoded with the source run, then reframed).
Everything is computed before anything is written: Ctrl-C leaves no ``out``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.geometry import internal_to_relion, wrap_degrees
from cryovae.inference import TrainedRun
from cryovae.inference.core_frame import realign, rigid_weight, split_half_agreement, z_at_pose
from cryovae.io import atomic_path
from cryovae.runs import Latents, RunDir, model_state
from cryovae.training.fixed_pose import FixedPoseConfig, fit_fixed_pose
from cryovae.workflows.train import _file_logger, write_results

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ReframeConfig:
    """Options of :func:`reframe_run`.

    rounds : realign-then-train rounds.
    max_turn_deg : the largest extra turn searched (degrees, both ways), in ``step_deg`` steps; 0
        holds every particle at the run's own rotation (no search, no split-half gate: the rounds
        are then fixed-pose training alone, the control of the realignment).
    weight_power : how strongly varying pixels are left out of the rigid part (:func:`rigid_weight`).
    min_agreement : the least split-half correlation of the turns to go on (-1 always goes on).
    train : the fixed-pose training of each round (its epochs, learning rate, batch size; round
        ``r`` uses ``seed + r``).
    """

    rounds: int = 4
    max_turn_deg: float = 24.0
    step_deg: float = 1.0
    weight_power: float = 4.0
    min_agreement: float = 0.1
    train: FixedPoseConfig = FixedPoseConfig()

    def validate(self) -> None:
        if self.rounds < 1:
            raise CryovaeError(f"--rounds must be >= 1, got {self.rounds}")
        if not 0 <= self.max_turn_deg <= 180:
            raise CryovaeError(f"--max-turn must be in [0, 180] degrees, got {self.max_turn_deg}")
        if not (self.step_deg > 0 and (self.max_turn_deg == 0 or self.step_deg <= self.max_turn_deg)):
            raise CryovaeError(f"--step must be in (0, --max-turn] degrees, got {self.step_deg}")
        if not -1 <= self.min_agreement <= 1:
            raise CryovaeError(f"--min-agreement is a correlation in [-1, 1], got {self.min_agreement}")
        self.train.validate()

    def fixed_pose(self, round_: int) -> FixedPoseConfig:
        """The training options of round ``round_`` (from 0)."""
        return replace(self.train, seed=self.train.seed + round_)

    @property
    def holds(self) -> bool:
        """True when no turn is searched: every particle keeps the run's rotation."""
        return self.max_turn_deg == 0

    def deltas(self) -> np.ndarray:
        """(D,) the extra turns searched, radians, 0 among them (only 0 when :attr:`holds`)."""
        k = int(np.floor(self.max_turn_deg / self.step_deg + 1e-9))
        return np.radians(np.arange(-k, k + 1) * self.step_deg)


@dataclass
class ReframeResult:
    """What :func:`reframe_run` wrote and measured: ``out`` (the new run), ``agreement`` (the
    split-half correlation of the first round's turns; NaN with ``--max-turn 0``), ``rounds``
    (per round: median |turn| in degrees and the last epoch's -ELBO per particle) and ``latents``."""

    out: Path
    agreement: float
    rounds: list[dict]
    latents: Latents


def _check_paths(src: RunDir, dst: RunDir) -> None:
    if not src.config.exists():
        raise CryovaeError(f"{src.path}: not a cryovae run (no {src.CONFIG})")
    if not src.latents_file.exists():
        raise CryovaeError(f"{src.path}: the run has no {src.LATENTS} yet; let cryovae train finish (or --resume it)")
    if not src.images.exists():
        raise CryovaeError(f"{src.path}: the run's {src.IMAGES} is missing; run cryovae train --resume {src.path}")
    if dst.path.resolve() == src.path.resolve():
        raise CryovaeError(f"{dst.path}: the output must be a new folder, not the run itself")
    if dst.path.exists() and any(dst.path.iterdir()):
        raise CryovaeError(f"{dst.path}: already exists and is not empty; choose another -o")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def reframe_run(rundir: str | Path, out: str | Path, cfg: ReframeConfig = ReframeConfig(),
                device: str = "cpu", progress: bool = True, command_line: str | None = None) -> ReframeResult:
    """Realign a trained run on its rigid part and refit z there; write the new run ``out``.

    Parameters
    ----------
    rundir : a finished ``cryovae train`` run of a model with :meth:`~cryovae.models.PoseVAE.z_at_rotation`
        (TARGET-VAE); only read.
    out : the new run folder (must not exist, or be empty).
    cfg : :class:`ReframeConfig`.
    device : "cpu", "cuda", "cuda:N" or "auto".

    Raises
    ------
    CryovaeError
        One line: not a finished run, a model without z at every rotation, ``out`` not new, or
        turns that the data do not determine (split-half agreement below ``cfg.min_agreement``).
    """
    from cryovae.io import read_run_particles

    cfg.validate()
    src, dst = RunDir(rundir), RunDir(out)
    _check_paths(src, dst)
    run = TrainedRun.load(src.path, device)
    model, config = run.model, run.config
    if config.model.ctf:  # the realignment compares each particle with its CTF-free template
        raise CryovaeError(f"{src.path}: trained with --ctf; reframe does not yet apply each particle's CTF to "
                           "the templates it aligns on")
    stack = read_run_particles(config.input)
    images = np.asarray(src.cached_images(stack, config.preprocess, progress=False, lazy=False, write=False),
                        dtype=np.float32)
    lat = src.read_latents()
    if len(lat) != len(images):
        raise CryovaeError(f"{src.path}: {src.LATENTS} has {len(lat)} particles but {src.IMAGES} has {len(images)}")
    z_at_pose(model, images[:1], lat.theta[:1], run.device)  # one line now for a model without z at a rotation

    theta, z = lat.theta.astype(np.float64), lat.z_mean
    rounds, agreement = [], float("nan")
    log.info("reframing %s: %d rounds of %s and %d fixed-pose epochs", src.path, cfg.rounds,
             "the run's own rotations (--max-turn 0)" if cfg.holds else
             f"realignment (turns up to {cfg.max_turn_deg:g} deg)", cfg.train.epochs)
    for r in range(cfg.rounds):
        if cfg.holds:  # the control: fixed-pose training at the run's own rotations
            delta = np.zeros(len(images))
        else:
            delta, measured = _turns(src, images, run.decode(z), theta, lat.center_px, cfg, first=r == 0)
            agreement = agreement if measured is None else measured
        theta = np.radians(wrap_degrees(np.degrees(theta + delta)))
        loss = fit_fixed_pose(model, images, theta, lat.center_px, cfg.fixed_pose(r), run.device,
                              progress=progress)
        z, z_std = z_at_pose(model, images, theta, run.device)
        turn = float(np.degrees(np.median(np.abs(delta))))
        rounds.append({"round": r + 1, "median_turn_deg": turn, "neg_elbo": loss})
        log.info("round %d/%d: median turn %.2f deg; -ELBO %.2f nats per particle", r + 1, cfg.rounds, turn, loss)

    latents = replace(lat, z_mean=z.astype(np.float32), z_std=z_std.astype(np.float32), theta=theta,
                      psi_deg=internal_to_relion(theta, lat.center_px)[0], prob=None)
    _write(src, dst, run, stack, latents, cfg, agreement, rounds, command_line)
    return ReframeResult(out=dst.path, agreement=agreement, rounds=rounds, latents=latents)


def _turns(src: RunDir, images: np.ndarray, templates: np.ndarray, theta: np.ndarray, center_px: np.ndarray,
           cfg: ReframeConfig, first: bool) -> tuple[np.ndarray, float | None]:
    """One round's realignment: each particle's extra turn (n,) radians, and in the ``first``
    round the split-half agreement (checked against ``cfg.min_agreement``; None in later rounds)."""
    weight = rigid_weight(templates, cfg.weight_power)
    if not first:
        return realign(images, templates, weight, theta, center_px, cfg.deltas()), None
    turns = realign(images, templates, weight, theta, center_px, cfg.deltas(), halves=True)
    agreement = split_half_agreement(turns[1], turns[2])
    log.info("split-half agreement of the turns: %.3f (needed %.2f)", agreement, cfg.min_agreement)
    if agreement < cfg.min_agreement:
        raise CryovaeError(
            f"{src.path}: the rigid part does not determine each particle's turn (split-half agreement "
            f"{agreement:.2f} < --min-agreement {cfg.min_agreement:g}; noisy data or no rigid part); "
            "nothing written")
    return turns[0], agreement


def _write(src: RunDir, dst: RunDir, run: TrainedRun, stack, latents: Latents, cfg: ReframeConfig,
           agreement: float, rounds: list[dict], command_line: str | None) -> None:
    """Every file of the new run; on a failure or Ctrl-C the folder is removed again."""
    created = not dst.path.exists()
    dst.create()
    handler = _file_logger(dst)
    try:
        config = run.config
        dst.write_config(config, command_line or " ".join(sys.argv))
        _link_or_copy(src.images, dst.images)
        for name in (src.IMAGES_KEY, src.BAD_LIST):
            if (src.path / name).exists():
                shutil.copyfile(src.path / name, dst.path / name)
        epochs = len(rounds) * cfg.train.epochs
        dst.save_best(model_state(run.model), epoch=epochs, elbo=-rounds[-1]["neg_elbo"])
        record = {"source": str(src.path.resolve()), "options": asdict(cfg),
                  "split_half_agreement": None if cfg.holds else agreement, "rounds": rounds}
        with atomic_path(dst.reframe) as tmp:
            Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
        star = write_results(dst, stack, latents, bool(config.input.get("absolute_paths", False)))
        log.info("reframed %s: wrote %s and %s", src.path, star, dst.latents_file)
    except BaseException:
        shutil.rmtree(dst.path, ignore_errors=True)  # it was new or empty
        if not created:
            dst.path.mkdir(exist_ok=True)
        raise
    finally:
        logging.getLogger("cryovae").removeHandler(handler)
        handler.close()
