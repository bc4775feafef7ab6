"""A whole training run on a particle file: read, preprocess once (cached), fit, encode, write.

``RUNDIR`` receives config.yaml, images.npy (the preprocessed stack, reused on resume) with
images.json (what it was made from), checkpoint.pt, best.pt, metrics.csv, train.log, then
latents.npz and particles.star (and, for a cryoSPARC ``.cs`` input, particles.cs + particles.csg).

Ctrl-C (or SIGTERM) in any phase stops with :class:`cryovae.errors.RunInterrupted` (exit 130, 143): checkpoint.pt
stays resumable and no final output (latents.npz, particles.star, particles.cs) is left from this call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from cryovae import __version__
from cryovae.errors import CryovaeError, DamagedFileError, RunInterrupted, Terminated
from cryovae.inference.encode import encode_images
from cryovae.inference.latents import Latents
from cryovae.inference.recenter import recenter_template, store_template_center
from cryovae.inference.refine import RefineConfig, refine_latents
from cryovae.io.atomic import atomic_path
from cryovae.io.writers import check_free_space
from cryovae.models import ModelConfig, ctf_parameters
from cryovae.training.config import TrainConfig
from cryovae.training.device import resolve_device
from cryovae.training.loop import BEST, CHECKPOINT, FitResult, check_ctf_finite, fit
from cryovae.training.rundir import RunConfig, read_run_config, write_run_config

log = logging.getLogger(__name__)

IMAGES_CACHE = "images.npy"
LATENTS = "latents.npz"
STAR = "particles.star"
CS = "particles.cs"
#: Output particle files cryovae writes, by suffix.
OUTPUT_SUFFIXES = (".star", ".cs")
LOG = "train.log"
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


#: bump when preprocess_images changes what it makes from the same input and options
IMAGES_CACHE_FORMAT = 1
IMAGES_KEY = "images.json"


def _file_record(path: Path) -> dict:
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def images_cache_key(stack, preprocess: dict) -> dict:
    """What a RUNDIR/images.npy is made from: the particle file and every stack file (resolved
    path, size, mtime), the particle count, a hash of which image of which stack each particle
    is, the preprocessing options and the cryovae version. Stored as RUNDIR/images.json."""
    files: dict[str, dict] = {}
    for p in [stack.path, *stack.stack_paths]:
        if p is not None and Path(p).exists():
            rec = _file_record(Path(p))
            files.setdefault(rec["path"], rec)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(stack.file_index, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(stack.image_index, dtype=np.int64).tobytes())
    h.update("\n".join(str(r) for r in stack.stack_refs).encode())
    key = {"format": IMAGES_CACHE_FORMAT, "cryovae_version": __version__, "n_particles": len(stack),
           "preprocess": {k: preprocess[k] for k in sorted(preprocess)}, "files": list(files.values()),
           "index_sha256": h.hexdigest()}
    return json.loads(json.dumps(key))  # as it reads back from images.json


def _cache_mismatch(rundir: Path, key: dict, box: int, n: int) -> str | None:
    """Why RUNDIR/images.npy cannot be reused for ``key`` (None: it can)."""
    path, key_path = Path(rundir) / IMAGES_CACHE, Path(rundir) / IMAGES_KEY
    if not path.exists():
        return "absent"
    try:
        stored = json.loads(key_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{path} has no {IMAGES_KEY} saying what it was made from"
    except (OSError, ValueError) as exc:
        return f"{key_path} is damaged ({type(exc).__name__})"
    if not isinstance(stored, dict):
        return f"{key_path} is damaged"
    differ = [k for k in key if stored.get(k) != key[k]]
    if differ:
        return f"{path} was made from other particles or preprocessing ({', '.join(differ)} differ)"
    try:
        shape = np.load(path, mmap_mode="r").shape
    except (OSError, ValueError, EOFError) as exc:
        return f"{path} is damaged ({type(exc).__name__})"
    if shape != (n, box, box):
        return f"{path} holds {shape}, not ({n}, {box}, {box})"
    return None


def cached_images(rundir: Path, stack, preprocess: dict, progress: bool = True) -> np.ndarray:
    """RUNDIR/images.npy when its images.json matches ``stack`` and ``preprocess``
    (:func:`images_cache_key`), else preprocess again (logged) and write both (atomic)."""
    rundir = Path(rundir)
    path, key_path = rundir / IMAGES_CACHE, rundir / IMAGES_KEY
    box = int(preprocess["box"])
    key = images_cache_key(stack, preprocess)
    why = _cache_mismatch(rundir, key, box, len(stack))
    if why is None:
        log.info("using preprocessed images from %s", path)
        return np.load(path)
    if why != "absent":
        log.warning("%s; preprocessing again", why)
    key_path.unlink(missing_ok=True)
    check_free_space(path, 4 * len(stack) * box * box + 4096)
    arr = preprocess_stack(stack, preprocess, progress=progress)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)
    with atomic_path(key_path) as tmp:
        tmp.write_text(json.dumps(key, indent=1), encoding="utf-8")
    return arr


def stack_ctf(stack, source: str) -> np.ndarray:
    """(n, 7) CTF parameters of a stack; CryovaeError naming a missing column, or a column and
    the first particle where a value is NaN or infinite."""
    try:
        params = ctf_parameters(stack.table)
    except KeyError as exc:
        raise CryovaeError(f"{source}: --ctf needs the column _{exc.args[0]} in the particle table") from None
    check_ctf_finite(params, source, stack.rows)
    return params


class _RunLogHandler(logging.FileHandler):
    """RUNDIR/train.log; if the disk fills it stops writing instead of printing tracebacks (the
    next checkpoint or output write reports the full disk as one line)."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failed = True


def _file_logger(rundir: Path) -> logging.Handler:
    handler = _RunLogHandler(Path(rundir) / LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("cryovae")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def write_star(stack, latents: Latents, out_star: Path, absolute_paths: bool = False) -> Path:
    """The input star plus rlnAnglePsi, rlnOriginX/YAngst, cryovaeZ1..n and cryovaeProb
    (``absolute_paths``: absolute stack paths in rlnImageName)."""
    from cryovae.io import write_particles_star

    extra = {"cryovaeProb": latents.prob} if latents.prob is not None else None
    write_particles_star(stack, Path(out_star), psi_deg=latents.psi_deg, origin_A=latents.origin_A,
                         latents=latents.z_mean if latents.z_mean.shape[1] else None, extra=extra,
                         absolute_paths=absolute_paths)
    return Path(out_star)


def write_cs(stack, latents: Latents, out_cs: Path) -> Path:
    """cryoSPARC results: ``out_cs`` (alignments2D pose/shift, cryovae/z1..n, cryovae/prob) + .csg."""
    from cryovae.io import write_particles_cs

    extra = {"cryovaeProb": latents.prob} if latents.prob is not None else None
    write_particles_cs(stack, Path(out_cs), psi_deg=latents.psi_deg, origin_A=latents.origin_A,
                       latents=latents.z_mean if latents.z_mean.shape[1] else None, extra=extra)
    return Path(out_cs)


def check_output(path: str | Path) -> Path:
    """``path`` if cryovae writes its kind (.star, .cs), else a one-line CryovaeError."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CryovaeError(f"{path}: unknown output type '{path.suffix}' (use .star for RELION or .cs for "
                           "cryoSPARC)")
    return path


def write_particles(stack, latents: Latents, out: Path, absolute_paths: bool = False) -> Path:
    """Write ``out`` as a RELION star or cryoSPARC .cs (+ .csg), chosen by its suffix.

    ``absolute_paths`` applies to a star; a .cs always holds absolute paths to the stacks found.
    """
    out = check_output(out)
    if out.suffix.lower() == ".cs":
        return write_cs(stack, latents, out)
    return write_star(stack, latents, out, absolute_paths)


def write_results(rundir: Path, stack, latents: Latents, absolute_paths: bool = False) -> Path:
    """RUNDIR/latents.npz and RUNDIR/particles.star (+ particles.cs/.csg for a .cs input); if a
    write fails or is interrupted, the outputs this call already wrote are removed (no half set
    of results)."""
    rundir = Path(rundir)
    written: list[Path] = []
    try:
        latents.save(rundir / LATENTS)
        written.append(rundir / LATENTS)
        star = write_star(stack, latents, rundir / STAR, absolute_paths)
        written.append(star)
        if stack.source_kind == "cryosparc":
            written.append(write_cs(stack, latents, rundir / CS))
            written.append((rundir / CS).with_suffix(".csg"))
        return star
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


#: temporaries of cryovae's atomic writers (cryovae.io.atomic) left by a killed run
_TEMPORARY_PATTERNS = ("*.tmp", "*.tmp.plain")


def remove_stale_temporaries(rundir: Path) -> list[Path]:
    """Delete the ``*.tmp`` files a killed run left in ``rundir``; returns them."""
    stale = sorted({p for pat in _TEMPORARY_PATTERNS for p in Path(rundir).glob(pat) if p.is_file()})
    for p in stale:
        p.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted write", p)
    return stale


def _interrupted(rundir: Path, phase: str, signal: KeyboardInterrupt) -> RunInterrupted:
    """The one line for Ctrl-C (or SIGTERM: ``signal`` is a :class:`Terminated`) in ``phase``:
    what is kept and how to go on."""
    from cryovae.training.checkpoint import load_checkpoint

    what, code = ("terminated (SIGTERM)", 143) if isinstance(signal, Terminated) else ("interrupted", 130)
    if not (rundir / "config.yaml").exists():
        return RunInterrupted(f"{what} while {phase}; no run was started; run the command again", code)
    kept = "no epoch has finished yet"
    try:
        kept = f"{rundir / CHECKPOINT} keeps epoch {int(load_checkpoint(rundir / CHECKPOINT)['epoch'])}"
    except CryovaeError:
        pass
    return RunInterrupted(f"{what} while {phase}; {kept}; no results were written; "
                          f"resume with: cryovae train --resume {rundir}", code)


def train_run(particles: str | Path, rundir: str | Path, model_cfg: ModelConfig | None,
              train_cfg: TrainConfig | None, preprocess: dict | None = None, device: str = "auto",
              resume: bool = False, datadir: str | Path | None = None, command_line: str | None = None,
              epochs: int | None = None, progress: bool = True, auto_box: bool = False,
              absolute_paths: bool | None = None, apix: float | None = None,
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

    Relative stack paths are looked up from the folder the run was started in first (saved in
    config.yaml as ``input.project_dir``), so a resumed run finds them from any folder.

    Raises
    ------
    RunInterrupted
        On Ctrl-C, in any phase: checkpoint.pt is left resumable and no final output is left
        from this call.
    """
    from cryovae.io import read_run_particles
    from cryovae.io.bad_particles import BAD_LIST, report_skipped

    rundir = Path(rundir)
    if resume:
        run_cfg = read_run_config(rundir)
        if epochs is not None:
            run_cfg = replace(run_cfg, train=replace(run_cfg.train, epochs=int(epochs)))
        recorded = dict(run_cfg.input)
        if not recorded.get("particles"):
            raise DamagedFileError(f"{rundir / 'config.yaml'}: damaged run config: input has no particles")
        particles = recorded["particles"]
        if absolute_paths is None:
            absolute_paths = bool(recorded.get("absolute_paths", False))
    else:
        if model_cfg is None or train_cfg is None:
            raise CryovaeError("a new run needs model and training options")
        train_cfg.validate()
        model_cfg.validate()
        if rundir.exists() and (rundir / "checkpoint.pt").exists():
            raise CryovaeError(f"{rundir}: already holds a run; use --resume or another -o")
        # how the particles are read, recorded so that --resume, analyze and napari read them alike
        recorded = {"particles": str(Path(particles).resolve()),
                    "datadir": None if datadir is None else str(Path(datadir).absolute()),
                    "project_dir": str(Path.cwd().absolute()),
                    "apix": None if apix is None else float(apix), "skip_bad": bool(skip_bad)}
    rundir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(rundir)
    handler = _file_logger(rundir)
    phase = "reading the particles"
    try:
        stack = read_run_particles(recorded)
        report_skipped(stack, rundir / BAD_LIST)
        if not resume:
            if auto_box:
                model_cfg = replace(model_cfg, box=default_model_box(stack.box, particles))
            pre = {"box": model_cfg.box, **(preprocess or {})}
            pre["box"] = model_cfg.box
            pixel_size = float(stack.pixel_size) * stack.box / model_cfg.box
            model_cfg = replace(model_cfg, pixel_size=pixel_size)
            run_cfg = RunConfig(model=model_cfg, train=train_cfg, preprocess=pre, device=str(device),
                                input={**recorded, "absolute_paths": bool(absolute_paths),
                                       "n_particles": len(stack), "box": int(stack.box),
                                       "pixel_size": float(stack.pixel_size)})
        ctf = stack_ctf(stack, str(particles)) if run_cfg.model.ctf else None
        write_run_config(rundir, run_cfg, command_line)
        dev = resolve_device(device)
        log.info("training %s on %d particles (%s) on %s", run_cfg.model.kind, len(stack), particles, dev)
        phase = "preprocessing"
        images = cached_images(rundir, stack, run_cfg.preprocess, progress)
        phase = "training"
        has_checkpoint = (rundir / CHECKPOINT).exists()
        if resume and not has_checkpoint:
            log.info("%s: no checkpoint yet; training from epoch 0", rundir)
        result = fit(images, run_cfg.model, run_cfg.train, rundir, dev, ctf_params=ctf,
                     resume=resume and has_checkpoint, progress=progress)
        phase = "encoding and refining"
        recenter_template(result.model, images, dev)  # the pose-free decode on the box centre
        store_template_center(result.model, [rundir / BEST, rundir / CHECKPOINT])
        latents = encode_images(result.model, images, run_cfg.model.pixel_size, dev)
        if run_cfg.train.refine_steps:
            log.info("refining every particle's pose and z (%d steps)", run_cfg.train.refine_steps)
            latents = refine_latents(result.model, images, latents, RefineConfig(steps=run_cfg.train.refine_steps),
                                     ctf_params=ctf, device=dev, progress=progress)
        phase = "writing the results"
        star = write_results(rundir, stack, latents, bool(absolute_paths))
        log.info("best epoch %d; wrote %s and %s", result.best_epoch, star, rundir / LATENTS)
        return result
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        raise _interrupted(rundir, phase, exc) from None
    finally:
        logging.getLogger("cryovae").removeHandler(handler)
        handler.close()
