"""A whole training run on a particle file: read, preprocess once (cached), fit, encode, write.

``RUNDIR`` receives config.yaml, images.npy (the preprocessed stack, reused on resume) with
images.json (what it was made from), checkpoint.pt, best.pt, metrics.csv, train.log, then
latents.npz and particles.star (and, for a cryoSPARC ``.cs`` input, particles.cs + particles.csg).

Ctrl-C (or SIGTERM) in any phase stops with :class:`cryovae.errors.RunInterrupted` (exit 130, 143): checkpoint.pt
stays resumable and no final output (latents.npz, particles.star, particles.cs) is left from this call.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cryovae.data import LoaderConfig, ParticleDataset, signal_radius
from cryovae.device import resolve_device
from cryovae.distributed import World, init_world
from cryovae.errors import CryovaeError, DamagedFileError, RunInterrupted, Terminated
from cryovae.inference import (
    Align2DConfig,
    RefineConfig,
    align_to_one_template,
    encode_images,
    improve_latents,
    posterior_grid_for,
    recenter_template,
    stack_ctf,
    store_template_center,
    write_cs,
    write_star,
)
from cryovae.io import row_range
from cryovae.models import ModelConfig, RotationGuide, model_class
from cryovae.runs import Latents, RunConfig, RunDir, TrainConfig
from cryovae.training import FitResult, fit, seeded_model

log = logging.getLogger(__name__)

#: the default model box: images up to this size are used as they are, larger ones Fourier-cropped to it
DEFAULT_MAX_BOX = 40
#: the smallest model box (ModelConfig.validate)
MIN_BOX = 8


def default_model_box(size: int, source: str | Path = "particles") -> int:
    """The model box ``train`` uses without ``--box``, for ``size``-pixel images.

    ``size`` itself when ``size <= DEFAULT_MAX_BOX`` (no crop; an odd size is fine, the models
    centre on pixel ``box // 2``), else ``DEFAULT_MAX_BOX`` (a Fourier crop). Logs one line with
    the choice and the reason; :class:`CryovaeError` naming ``source`` when the images are
    smaller than ``MIN_BOX`` pixels.
    """
    size = int(size)
    if size < MIN_BOX:
        raise CryovaeError(f"{source}: the images are {size} px; cryovae needs at least {MIN_BOX} px")
    if size <= DEFAULT_MAX_BOX:
        log.info("model box %d px: the images' own size (%d px <= %d, no Fourier crop; --box to change)",
                 size, size, DEFAULT_MAX_BOX)
        return size
    log.info("model box %d px: the %d px images Fourier-cropped to the default %d px (--box to change)",
             DEFAULT_MAX_BOX, size, DEFAULT_MAX_BOX)
    return DEFAULT_MAX_BOX


class _RunLogHandler(logging.FileHandler):
    """RUNDIR/train.log; if the disk fills it stops writing instead of printing tracebacks (the
    next checkpoint or output write reports the full disk as one line)."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failed = True


def _file_logger(run: RunDir) -> logging.Handler:
    handler = _RunLogHandler(run.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("cryovae")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def write_results(rundir: str | Path | RunDir, stack, latents: Latents, absolute_paths: bool = False) -> Path:
    """RUNDIR/latents.npz and RUNDIR/particles.star (+ particles.cs/.csg for a .cs input); if a
    write fails or is interrupted, the outputs this call already wrote are removed (no half set
    of results)."""
    run = RunDir.of(rundir)
    written: list[Path] = []
    try:
        written.append(run.save_latents(latents))
        star = write_star(stack, latents, run.star, absolute_paths)
        written.append(star)
        if stack.source_kind == "cryosparc":
            written.append(write_cs(stack, latents, run.cs))
            written.append(run.cs.with_suffix(".csg"))
        return star
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def write_run_class_averages(model, rundir: str | Path | RunDir, latents: Latents) -> list[Path]:
    """RUNDIR/classes.mrcs, classes.star and classes.png for a model that assigns classes
    (:meth:`cryovae.models.PoseVAE.class_images`); nothing (an empty list) for another."""
    from cryovae.analysis.class_averages import class_averages, run_classes, write_class_files

    run = RunDir.of(rundir)
    avg = class_averages(model, run_classes(latents), model.cfg.pixel_size)
    return [] if avg is None else write_class_files(avg, run.class_stack, run.class_star, run.class_png)


def _interrupted(run: RunDir, phase: str, signal: KeyboardInterrupt) -> RunInterrupted:
    """The one line for Ctrl-C (or SIGTERM: ``signal`` is a :class:`Terminated`) in ``phase``:
    what is kept and how to go on."""
    what, code = ("terminated (SIGTERM)", 143) if isinstance(signal, Terminated) else ("interrupted", 130)
    if not run.is_run():
        return RunInterrupted(f"{what} while {phase}; no run was started; run the command again", code)
    epoch = run.checkpoint_epoch()
    kept = "no epoch has finished yet" if epoch is None else f"{run.checkpoint} keeps epoch {epoch}"
    return RunInterrupted(f"{what} while {phase}; {kept}; no results were written; "
                          f"resume with: cryovae train --resume {run.path}", code)


def train_run(particles: str | Path, rundir: str | Path | RunDir, model_cfg: ModelConfig | None,
              train_cfg: TrainConfig | None, preprocess: dict | None = None, device: str = "auto",
              resume: bool = False, datadir: str | Path | None = None, command_line: str | None = None,
              epochs: int | None = None, progress: bool = True, auto_box: bool = False,
              absolute_paths: bool | None = None, apix: float | None = None,
              skip_bad: bool = False, loader: LoaderConfig | None = None) -> FitResult:
    """Train on a particle file and write every output into ``rundir``.

    Parameters
    ----------
    particles : .star / .cs / .mrcs particle file (read with :func:`cryovae.io.read_particles`).
    rundir : output directory (created).
    model_cfg : model options; its ``pixel_size`` is replaced by the stack's pixel size scaled to
        ``model_cfg.box``. Ignored on resume (the saved config is used).
    train_cfg : training options (ignored on resume, except ``epochs``).
    preprocess : extra :class:`cryovae.data.PreprocessConfig` options (``box`` comes from the model).
    device : "auto", "cpu", "cuda" or "cuda:N".
    resume : continue the run in ``rundir`` from its checkpoint (from epoch 0 when it was
        stopped before its first checkpoint).
    epochs : on resume, a new total number of epochs (None keeps the saved one).
    auto_box : replace ``model_cfg.box`` by :func:`default_model_box` of the images (``train``
        without ``--box``).
    absolute_paths : write absolute stack paths into particles.star (None: False, or on resume
        the run's own choice).
    datadir, apix, skip_bad : how to read ``particles`` (:func:`cryovae.io.read_particles`);
        stored in the run config's ``input`` and used again on resume. With ``skip_bad`` the
        particles left out are listed in RUNDIR/bad_particles.txt and the outputs hold the others.
    loader : how the preprocessed images are read (in memory or streamed from disk, reader
        processes); it changes no result.

    Started by ``torchrun`` (several processes), every process trains its part of each step
    (:func:`cryovae.training.fit`) and encodes and refines its part of the particles; rank 0 alone
    preprocesses, writes the run's files and logs to train.log.

    Relative stack paths are looked up from the folder the run was started in first (saved in
    config.yaml as ``input.project_dir``), so a resumed run finds them from any folder.

    Raises
    ------
    RunInterrupted
        On Ctrl-C, in any phase: checkpoint.pt is left resumable and no final output is left
        from this call.
    """
    from cryovae.io import read_run_particles
    from cryovae.io.bad_particles import report_skipped

    loader = loader or LoaderConfig()
    run = RunDir.of(rundir)
    dev = resolve_device(device)
    world = init_world(dev)
    dev = world.device(dev)
    if resume:
        if run.reframe.exists():
            raise CryovaeError(f"{run.path}: made by cryovae reframe, not by training; resume the run it was made from")
        run_cfg = run.read_config()
        if epochs is not None:
            run_cfg = replace(run_cfg, train=replace(run_cfg.train, epochs=int(epochs)))
        recorded = dict(run_cfg.input)
        if not recorded.get("particles"):
            raise DamagedFileError(f"{run.config}: damaged run config: input has no particles")
        particles = recorded["particles"]
        if absolute_paths is None:
            absolute_paths = bool(recorded.get("absolute_paths", False))
    else:
        if model_cfg is None or train_cfg is None:
            raise CryovaeError("a new run needs model and training options")
        train_cfg.validate()
        model_cfg.validate()
        if run.has_checkpoint():
            raise CryovaeError(f"{run.path}: already holds a run; use --resume or another -o")
        # how the particles are read, recorded so that --resume, analyze and napari read them alike
        recorded = {"particles": str(Path(particles).resolve()),
                    "datadir": None if datadir is None else str(Path(datadir).absolute()),
                    "project_dir": str(Path.cwd().absolute()),
                    "apix": None if apix is None else float(apix), "skip_bad": bool(skip_bad)}
    world.barrier()  # no process may see the run folder rank 0 is about to create as an old run
    if world.is_main:
        run.create()
        run.remove_stale_temporaries()
    handler = _file_logger(run) if world.is_main else None
    phase = "reading the particles"
    try:
        stack = read_run_particles(recorded)
        if world.is_main:
            report_skipped(stack, run.bad_list)
        if not resume:
            if auto_box:
                model_cfg = replace(model_cfg, box=default_model_box(stack.box, particles))
            pre = {"box": model_cfg.box, **(preprocess or {})}
            pre["box"] = model_cfg.box
            pixel_size = float(stack.pixel_size) * stack.box / model_cfg.box
            # the centre prior at the run's box, recorded as a number
            model_cfg = replace(model_cfg, pixel_size=pixel_size, translation_prior_px=model_cfg.translation_sigma_px)
            run_cfg = RunConfig(model=model_cfg, train=train_cfg, preprocess=pre, device=str(device),
                                input={**recorded, "absolute_paths": bool(absolute_paths),
                                       "n_particles": len(stack), "box": int(stack.box),
                                       "pixel_size": float(stack.pixel_size)})
        ctf = stack_ctf(stack, str(particles)) if run_cfg.model.ctf else None
        if world.is_main:
            run.write_config(run_cfg, command_line)
        log.info("training %s on %d particles (%s) on %s%s", model_class(run_cfg.model.kind).title, len(stack),
                 particles, dev, f", {world.size} processes" if world.distributed else "")
        phase = "preprocessing"
        has_checkpoint = run.has_checkpoint()  # before rank 0 may write one
        if world.is_main:
            images = run.cached_images(stack, run_cfg.preprocess, progress, lazy=loader.lazy)
        world.barrier()  # rank 0 has written the image cache
        if not world.is_main:
            images = run.cached_images(stack, run_cfg.preprocess, False, lazy=loader.lazy, write=False)
        if run_cfg.model.likelihood_mask is None:  # a new run: measured on its particles, recorded
            extent = signal_radius(images)
            mask = extent.mask_fraction(run_cfg.model.box)
            run_cfg = replace(run_cfg, model=replace(run_cfg.model, likelihood_mask=mask))
            log.info("likelihood mask: radius %.2f of the box half-width (%.1f px; the signal ends %s)", mask,
                     mask * run_cfg.model.box / 2, "nowhere above the noise" if extent.radius_px is None
                     else f"{extent.radius_px:.0f} px from the centre")
            if world.is_main:
                run.write_config(run_cfg, command_line)
        phase = "aligning the particles"
        guide = rotation_guide(run, images, run_cfg, world, progress)
        phase = "training"
        if resume and not has_checkpoint:
            log.info("%s: no checkpoint yet; training from epoch 0", run.path)
        model = seeded_model(run_cfg.model, run_cfg.train.seed)
        result = fit(model, ParticleDataset(images, ctf), run_cfg.train, run, dev,
                     resume=resume and has_checkpoint, progress=progress, world=world, workers=loader.workers,
                     guide=guide)
        phase = "encoding and refining"
        if world.is_main:
            recenter_template(result.model, images, dev)  # the pose-free decode on the box centre
            store_template_center(result.model, run)
        world.broadcast(result.model.generator.template_center)
        latents = _encode_part(result.model, images, ctf, run_cfg, dev, world, progress)
        phase = "writing the results"
        if world.is_main:
            star = write_results(run, stack, latents, bool(absolute_paths))
            write_run_class_averages(result.model, run, latents)
            log.info("best epoch %d; wrote %s and %s", result.best_epoch, star, run.latents_file)
        world.barrier()  # every process returns once the results exist
        return result
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        raise _interrupted(run, phase, exc) from None
    finally:
        if handler is not None:
            logging.getLogger("cryovae").removeHandler(handler)
            handler.close()


#: the EM alignment before training learns its template from this many particles (all of a smaller
#: set), then poses every particle on it (:attr:`cryovae.inference.Align2DConfig.template_particles`)
ALIGN_TEMPLATE_PARTICLES = 1000
#: its iterations at most, and it stops once the rotations moved by less than this (degrees) twice
ALIGN_ITERATIONS, ALIGN_TOL_DEG = 15, 0.5


def rotation_guide(run: RunDir, images, run_cfg: RunConfig, world: World, progress: bool) -> RotationGuide | None:
    """The rotation guide of training (``run_cfg.train.align_rotations``; None when 0 or the model
    takes none): every particle's rotation from :func:`cryovae.inference.align_to_one_template`
    on the preprocessed ``images`` and its posterior std. Made once by rank 0 and kept in
    RUNDIR/alignment.npz (a resumed run reads it back)."""
    rotations = run_cfg.train.align_rotations
    if not rotations or not model_class(run_cfg.model.kind).rotation_guidance:
        return None
    n = len(images)
    if world.is_main and not run.alignment.exists():
        cfg = Align2DConfig(rotations=rotations, iterations=ALIGN_ITERATIONS, tol_deg=ALIGN_TOL_DEG,
                            shift_sigma_px=run_cfg.model.translation_sigma_px,
                            template_particles=ALIGN_TEMPLATE_PARTICLES, seed=run_cfg.train.seed)
        log.info("2D alignment of the particles to one template (%d rotations, template from %d particles), "
                 "to guide the encoder's rotations", rotations, min(n, ALIGN_TEMPLATE_PARTICLES))
        t0 = time.perf_counter()
        found = align_to_one_template(images, cfg, progress)
        run.save_alignment({"theta": found.theta, "theta_std": found.theta_std, "confidence": found.confidence,
                            "changes_deg": found.changes_deg})
        log.info("2D alignment: %d iterations in %.0f s; median rotation std %.1f deg", len(found.changes_deg),
                 time.perf_counter() - t0, math.degrees(float(np.median(found.theta_std))))
    world.barrier()  # rank 0 has written alignment.npz
    arrays = run.read_alignment(n)
    return RotationGuide(torch.as_tensor(arrays["theta"], dtype=torch.float32),
                         torch.as_tensor(arrays["theta_std"], dtype=torch.float32), run_cfg.train.guide_weight)


def _encode_part(model, images, ctf, run_cfg: RunConfig, device, world: World, progress: bool) -> Latents:
    """Encode (and refine) every particle: this process's contiguous part of them; on rank 0 the
    latents of all, in particle order (the parts gathered), elsewhere this part's."""
    n = len(images)
    bounds = np.linspace(0, n, world.size + 1).round().astype(int)
    lo, hi = int(bounds[world.rank]), int(bounds[world.rank + 1])
    part = row_range(images, lo, hi)
    show = progress and world.is_main
    part_ctf = None if ctf is None else ctf[lo:hi]
    latents = encode_images(model, part, run_cfg.model.pixel_size, device, progress=show, ctf_params=part_ctf)
    if run_cfg.train.refine_steps:
        log.info("refining every particle's pose and z (%d steps)", run_cfg.train.refine_steps)
    grid = posterior_grid_for(model, run_cfg.train.posterior_grid, device)
    latents = improve_latents(model, part, latents, RefineConfig(steps=run_cfg.train.refine_steps), grid,
                              ctf_params=part_ctf, device=device, progress=show)
    if not world.distributed:
        return latents
    parts = world.gather(latents)
    return Latents.concatenate(parts) if world.is_main else latents
