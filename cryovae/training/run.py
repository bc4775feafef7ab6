"""A whole training run on a particle file: read, preprocess once (cached), fit, encode, write.

``RUNDIR`` receives config.yaml, images.npy (the preprocessed stack, reused on resume),
checkpoint.pt, best.pt, metrics.csv, train.log, then latents.npz and particles.star.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.inference.encode import encode_images
from cryovae.inference.latents import Latents
from cryovae.inference.refine import RefineConfig, refine_latents
from cryovae.io.atomic import atomic_path
from cryovae.models import ModelConfig, ctf_parameters
from cryovae.training.config import TrainConfig
from cryovae.training.device import resolve_device
from cryovae.training.loop import FitResult, fit
from cryovae.training.rundir import RunConfig, read_run_config, write_run_config

log = logging.getLogger(__name__)

IMAGES_CACHE = "images.npy"
LATENTS = "latents.npz"
STAR = "particles.star"
LOG = "train.log"


def preprocess_stack(stack, preprocess: dict, batch_size: int = 1024, progress: bool = True) -> np.ndarray:
    """All particles of ``stack`` through :func:`cryovae.data.preprocess_images`, in chunks.

    Returns (n, box, box) float32 with ``box = preprocess["box"]``.
    """
    from tqdm.auto import tqdm

    from cryovae.data import ConstantImages, PreprocessConfig, preprocess_images

    pcfg = PreprocessConfig(**preprocess)
    out = np.empty((len(stack), pcfg.box, pcfg.box), np.float32)
    constant = ConstantImages(str(stack.path), stack.rows)  # all constant: refused; a few: one warning
    for idx, images in tqdm(stack.chunks(batch_size), desc="preprocessing", disable=not progress,
                            total=-(-len(stack) // batch_size)):
        constant.add(idx, images)
        out[idx] = preprocess_images(np.asarray(images, np.float32), pcfg)
    constant.check()
    return out


def cached_images(rundir: Path, stack, preprocess: dict, progress: bool = True) -> np.ndarray:
    """RUNDIR/images.npy if it matches the stack and box, else preprocess and write it (atomic)."""
    path = Path(rundir) / IMAGES_CACHE
    box = int(preprocess["box"])
    if path.exists():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (len(stack), box, box):
            log.info("using preprocessed images from %s", path)
            return np.asarray(arr)
    arr = preprocess_stack(stack, preprocess, progress=progress)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)
    return arr


def stack_ctf(stack, source: str) -> np.ndarray:
    """(n, 7) CTF parameters of a stack; CryovaeError naming the missing column."""
    try:
        return ctf_parameters(stack.table)
    except KeyError as exc:
        raise CryovaeError(f"{source}: --ctf needs the column _{exc.args[0]} in the particle table") from None


def _file_logger(rundir: Path) -> logging.Handler:
    handler = logging.FileHandler(Path(rundir) / LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("cryovae")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def write_star(stack, latents: Latents, out_star: Path) -> Path:
    """The input star plus rlnAnglePsi, rlnOriginX/YAngst, cryovaeZ1..n and cryovaeProb."""
    from cryovae.io import write_particles_star

    extra = {"cryovaeProb": latents.prob} if latents.prob is not None else None
    write_particles_star(stack, Path(out_star), psi_deg=latents.psi_deg, origin_A=latents.origin_A,
                         latents=latents.z_mean if latents.z_mean.shape[1] else None, extra=extra)
    return Path(out_star)


def write_results(rundir: Path, stack, latents: Latents) -> Path:
    """RUNDIR/latents.npz and RUNDIR/particles.star."""
    latents.save(Path(rundir) / LATENTS)
    return write_star(stack, latents, Path(rundir) / STAR)


def train_run(particles: str | Path, rundir: str | Path, model_cfg: ModelConfig | None,
              train_cfg: TrainConfig | None, preprocess: dict | None = None, device: str = "auto",
              resume: bool = False, datadir: str | Path | None = None, command_line: str | None = None,
              epochs: int | None = None, progress: bool = True, apix: float | None = None,
              skip_bad: bool = False) -> FitResult:
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
    resume : continue the run in ``rundir`` from its checkpoint.
    epochs : on resume, a new total number of epochs (None keeps the saved one).
    datadir, apix, skip_bad : how to read ``particles`` (:func:`cryovae.io.read_particles`);
        stored in the run config's ``input`` and used again on resume. With ``skip_bad`` the
        particles left out are listed in RUNDIR/bad_particles.txt and the outputs hold the others.
    """
    from cryovae.io import read_particles
    from cryovae.io.bad_particles import BAD_LIST, report_skipped

    rundir = Path(rundir)
    if resume:
        run_cfg = read_run_config(rundir)
        if epochs is not None:
            run_cfg = replace(run_cfg, train=replace(run_cfg.train, epochs=int(epochs)))
        particles = Path(run_cfg.input.get("particles", particles))
        datadir = run_cfg.input.get("datadir", datadir)
        apix = run_cfg.input.get("apix", apix)
        skip_bad = bool(run_cfg.input.get("skip_bad", skip_bad))
    else:
        if model_cfg is None or train_cfg is None:
            raise CryovaeError("a new run needs model and training options")
        train_cfg.validate()
        model_cfg.validate()
        if rundir.exists() and (rundir / "checkpoint.pt").exists():
            raise CryovaeError(f"{rundir}: already holds a run; use --resume or another -o")
    rundir.mkdir(parents=True, exist_ok=True)
    handler = _file_logger(rundir)
    try:
        stack = read_particles(particles, datadir=datadir, apix=apix, skip_bad=skip_bad)
        report_skipped(stack, rundir / BAD_LIST)
        if not resume:
            pre = {"box": model_cfg.box, **(preprocess or {})}
            pre["box"] = model_cfg.box
            pixel_size = float(stack.pixel_size) * stack.box / model_cfg.box
            model_cfg = replace(model_cfg, pixel_size=pixel_size)
            run_cfg = RunConfig(model=model_cfg, train=train_cfg, preprocess=pre, device=str(device),
                                input={"particles": str(Path(particles).resolve()),
                                       "datadir": None if datadir is None else str(datadir),
                                       "apix": None if apix is None else float(apix), "skip_bad": bool(skip_bad),
                                       "n_particles": len(stack), "box": int(stack.box),
                                       "pixel_size": float(stack.pixel_size)})
        write_run_config(rundir, run_cfg, command_line)
        dev = resolve_device(device)
        log.info("training %s on %d particles (%s) on %s", run_cfg.model.kind, len(stack), particles, dev)
        images = cached_images(rundir, stack, run_cfg.preprocess, progress)
        ctf = stack_ctf(stack, str(particles)) if run_cfg.model.ctf else None
        result = fit(images, run_cfg.model, run_cfg.train, rundir, dev, ctf_params=ctf, resume=resume,
                     progress=progress)
        latents = encode_images(result.model, images, run_cfg.model.pixel_size, dev)
        if run_cfg.train.refine_steps:
            log.info("refining every particle's pose and z (%d steps)", run_cfg.train.refine_steps)
            latents = refine_latents(result.model, images, latents, RefineConfig(steps=run_cfg.train.refine_steps),
                                     ctf_params=ctf, device=dev, progress=progress)
        star = write_results(rundir, stack, latents)
        log.info("best epoch %d; wrote %s and %s", result.best_epoch, star, rundir / LATENTS)
        return result
    finally:
        logging.getLogger("cryovae").removeHandler(handler)
        handler.close()
