"""The run directory: one object that owns every file a run keeps.

::

    RUNDIR/config.yaml        every option (:class:`cryovae.runs.RunConfig`), version, command line
    RUNDIR/checkpoint.pt      the last epoch: weights and the trainer's state (resumable)
    RUNDIR/best.pt            the best validation epoch's weights
    RUNDIR/metrics.csv        one row per (epoch, split)
    RUNDIR/train.log          the log of every call on the run
    RUNDIR/images.npy         the preprocessed particles, with images.json: what they were made from
    RUNDIR/bad_particles.txt  particles left out with --skip-bad
    RUNDIR/latents.npz        per-particle results (:class:`cryovae.runs.Latents`)
    RUNDIR/particles.star     (and particles.cs/.csg for a cryoSPARC input) the results for RELION
    RUNDIR/classes.mrcs       a class model's class averages, with classes.star and classes.png
    RUNDIR/reframe.json       a run made by ``cryovae reframe`` from another: its options and figures
    RUNDIR/alignment.npz      the 2D alignment made before training (``--align-rotations``): each
                              particle's rotation and its std (the rotation guide), reused on resume

Training writes through a :class:`RunDir`; inference, analysis and napari read through it.
Both checkpoints have one layout, read with ``torch.load(weights_only=True)``:
``{"format", "model" (state dict), "epoch", "elbo", ...}``; checkpoint.pt adds the trainer's state.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from cryovae import __version__
from cryovae.errors import CryovaeError, DamagedFileError, InputFileError
from cryovae.io.atomic import atomic_path
from cryovae.io.bad_particles import BAD_LIST
from cryovae.runs.checkpoint import load_checkpoint, load_model_state, save_atomic
from cryovae.runs.config import CONFIG, RUN_FORMAT, RunConfig, read_run_config, write_run_config
from cryovae.runs.latents import Latents

log = logging.getLogger(__name__)

#: bump when preprocess_images changes what it makes from the same input and options
IMAGES_CACHE_FORMAT = 1
#: a preprocessed stack larger than this (bytes) is read from disk as needed, not held in memory
IN_MEMORY_LIMIT = 2**30
#: temporaries of cryovae's atomic writers (cryovae.io.atomic) left by a killed run
_TEMPORARY_PATTERNS = ("*.tmp", "*.tmp.plain")


class RunDir:
    """A run directory (it need not exist yet: :meth:`create`).

    Attributes are the paths of its files: ``config``, ``checkpoint``, ``best``, ``metrics``,
    ``log``, ``images``, ``images_key``, ``bad_list``, ``latents_file``, ``star``, ``cs``, and
    for a class model ``class_stack``, ``class_star``, ``class_png``.
    """

    CONFIG = CONFIG
    CHECKPOINT = "checkpoint.pt"
    BEST = "best.pt"
    METRICS = "metrics.csv"
    LOG = "train.log"
    IMAGES = "images.npy"
    IMAGES_KEY = "images.json"
    BAD_LIST = BAD_LIST
    LATENTS = "latents.npz"
    STAR = "particles.star"
    CS = "particles.cs"
    CLASS_STACK = "classes.mrcs"
    CLASS_STAR = "classes.star"
    CLASS_PNG = "classes.png"
    REFRAME = "reframe.json"
    ALIGNMENT = "alignment.npz"
    #: the arrays of alignment.npz, each (n,) (``changes_deg``: one per EM iteration)
    ALIGNMENT_ARRAYS = ("theta", "theta_std", "confidence", "changes_deg")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        p = self.path
        self.config, self.checkpoint, self.best = p / self.CONFIG, p / self.CHECKPOINT, p / self.BEST
        self.metrics, self.log, self.bad_list = p / self.METRICS, p / self.LOG, p / self.BAD_LIST
        self.images, self.images_key = p / self.IMAGES, p / self.IMAGES_KEY
        self.latents_file, self.star, self.cs = p / self.LATENTS, p / self.STAR, p / self.CS
        self.class_stack, self.class_star, self.class_png = p / self.CLASS_STACK, p / self.CLASS_STAR, p / self.CLASS_PNG
        self.reframe = p / self.REFRAME
        self.alignment = p / self.ALIGNMENT

    @classmethod
    def of(cls, run: str | Path | RunDir) -> RunDir:
        return run if isinstance(run, RunDir) else cls(run)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # -- config.yaml --------------------------------------------------------------------------
    def is_run(self) -> bool:
        """True when the folder holds a config.yaml."""
        return self.config.exists()

    def read_config(self) -> RunConfig:
        """RUNDIR/config.yaml (one-line errors for a missing, damaged or too new file)."""
        return read_run_config(self.path)

    def write_config(self, cfg: RunConfig, command_line: str | None = None) -> Path:
        return write_run_config(self.path, cfg, command_line)

    # -- checkpoints --------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return self.checkpoint.exists()

    def save_checkpoint(self, model_state: dict, epoch: int, trainer_state: dict) -> None:
        """checkpoint.pt: the weights after ``epoch`` and the trainer's state (atomic)."""
        save_atomic({"format": RUN_FORMAT, "model": model_state, "epoch": int(epoch), **trainer_state},
                    self.checkpoint)

    def save_best(self, model_state: dict, epoch: int, elbo: float) -> None:
        """best.pt: the weights of the best epoch so far (atomic)."""
        save_atomic({"format": RUN_FORMAT, "model": model_state, "epoch": int(epoch), "elbo": float(elbo)},
                    self.best)

    def load_checkpoint(self, which: str = "last", device: torch.device | str = "cpu",
                        keys: tuple[str, ...] = ("model",)) -> dict:
        """The dict in checkpoint.pt (``"last"``) or best.pt (``"best"``)."""
        return load_checkpoint(self.checkpoint if which == "last" else self.best, device, keys)

    def checkpoint_epoch(self) -> int | None:
        """The epoch checkpoint.pt holds, or None when it cannot be read."""
        try:
            return int(self.load_checkpoint("last", keys=("model", "epoch"))["epoch"])
        except CryovaeError:
            return None

    def weights_path(self, weights: str = "best") -> Path:
        """best.pt (``"best"``, falling back to checkpoint.pt) or checkpoint.pt (``"last"``)."""
        names = {"best": [self.best, self.checkpoint], "last": [self.checkpoint]}
        if weights not in names:
            raise CryovaeError(f"weights must be 'best' or 'last', got {weights!r}")
        path = next((p for p in names[weights] if p.exists()), None)
        if path is None:
            raise InputFileError(f"{self.path}: no weights (best.pt / checkpoint.pt)")
        return path

    def load_model(self, device: torch.device | str = "cpu", weights: str = "best"):
        """The run's model (:func:`cryovae.models.build_model` of its config) with its weights,
        on ``device``, in eval mode; and the :class:`RunConfig`."""
        from cryovae.models import build_model

        config = self.read_config()
        path = self.weights_path(weights)
        model = build_model(config.model)
        load_model_state(model, load_checkpoint(path, "cpu")["model"], path)
        return model.to(device).eval(), config

    def store_buffer(self, name: str, value: torch.Tensor) -> None:
        """Write one model buffer (e.g. ``generator.template_center``) into the weights of both
        checkpoints that exist, atomically; the rest of each file is kept."""
        value = value.detach().cpu().clone()
        for path in (self.best, self.checkpoint):
            if path.exists():
                ck = load_checkpoint(path, "cpu")
                ck["model"][name] = value.clone()
                save_atomic(ck, path)

    # -- metrics.csv --------------------------------------------------------------------------
    def write_metrics(self, history: list[dict]) -> None:
        """metrics.csv: one row per (epoch, split), written atomically (removed when empty)."""
        if not history:
            self.metrics.unlink(missing_ok=True)
            return
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        with atomic_path(self.metrics) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)

    # -- alignment.npz --------------------------------------------------------------------------
    def save_alignment(self, arrays: dict[str, np.ndarray]) -> Path:
        """RUNDIR/alignment.npz (atomic): :attr:`ALIGNMENT_ARRAYS` of the 2D alignment before training."""
        with atomic_path(self.alignment) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(arrays[k], dtype=np.float64) for k in self.ALIGNMENT_ARRAYS})
        return self.alignment

    def read_alignment(self, n: int) -> dict[str, np.ndarray]:
        """RUNDIR/alignment.npz for ``n`` particles; :class:`DamagedFileError` (one line) for a file that
        cannot be read, lacks an array, or holds another number of particles or non-finite values."""
        try:
            with np.load(self.alignment, allow_pickle=False) as d:
                arrays = {k: np.asarray(d[k], dtype=np.float64) for k in self.ALIGNMENT_ARRAYS}
        except (OSError, ValueError, EOFError, KeyError, AttributeError, zipfile.BadZipFile, zlib.error) as exc:
            raise DamagedFileError(f"{self.alignment}: damaged alignment file ({type(exc).__name__}); delete it "
                                   "and resume to align again") from None
        for k in ("theta", "theta_std", "confidence"):
            if arrays[k].shape != (n,) or not np.isfinite(arrays[k]).all():
                raise DamagedFileError(f"{self.alignment}: damaged alignment file ({k} is not {n} finite values); "
                                       "delete it and resume to align again")
        return arrays

    # -- latents.npz --------------------------------------------------------------------------
    def read_latents(self) -> Latents:
        return Latents.load(self.latents_file)

    def save_latents(self, latents: Latents) -> Path:
        latents.save(self.latents_file)
        return self.latents_file

    # -- the image cache ----------------------------------------------------------------------
    def cached_images(self, stack, preprocess: dict, progress: bool = True, lazy: bool | None = None,
                      write: bool = True):
        """RUNDIR/images.npy when its images.json matches ``stack`` and ``preprocess``
        (:func:`images_cache_key`), else preprocess again (logged) and write both (atomic; the
        stack is streamed through in chunks, never held whole).

        lazy : return the images as rows read from disk on demand (:class:`cryovae.io.NpyRows`)
            instead of an array in memory; None: on disk when the cache is larger than
            :data:`IN_MEMORY_LIMIT` bytes.
        write : False for the processes of a distributed run that are not rank 0: they only
            read the cache rank 0 wrote, and a missing or stale one is an error.
        """
        from cryovae.data import preprocess_chunks
        from cryovae.io.npy_rows import NpyRows, write_npy_rows
        from cryovae.io.writers import check_free_space

        box = int(preprocess["box"])
        key = images_cache_key(stack, preprocess)
        why = self._cache_mismatch(key, box, len(stack))
        if why is not None and not write:
            raise CryovaeError(f"{self.images}: not usable by this process ({why})")
        if why is None:
            log.info("using preprocessed images from %s", self.images)
        else:
            if why != "absent":
                log.warning("%s; preprocessing again", why)
            self.images_key.unlink(missing_ok=True)
            check_free_space(self.images, 4 * len(stack) * box * box + 4096)
            with write_npy_rows(self.images, (len(stack), box, box), np.float32) as out:
                for _, chunk in preprocess_chunks(stack, preprocess, progress=progress):
                    out.write(chunk)
            with atomic_path(self.images_key) as tmp:
                tmp.write_text(json.dumps(key, indent=1), encoding="utf-8")
        rows = NpyRows(self.images)
        if lazy is None:
            lazy = rows.nbytes > IN_MEMORY_LIMIT
        if lazy:
            log.info("reading the %.3g GB of preprocessed images from %s as needed", rows.nbytes / 1e9, self.images)
            return rows
        return rows[:]

    def _cache_mismatch(self, key: dict, box: int, n: int) -> str | None:
        """Why RUNDIR/images.npy cannot be reused for ``key`` (None: it can)."""
        path, key_path = self.images, self.images_key
        if not path.exists():
            return "absent"
        try:
            stored = json.loads(key_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return f"{path} has no {self.IMAGES_KEY} saying what it was made from"
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

    # -- housekeeping -------------------------------------------------------------------------
    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the ``*.tmp`` files a killed run left; returns them."""
        stale = sorted({p for pat in _TEMPORARY_PATTERNS for p in self.path.glob(pat) if p.is_file()})
        for p in stale:
            p.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted write", p)
        return stale


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
