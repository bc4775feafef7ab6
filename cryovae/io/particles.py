"""One reader for every particle file: :func:`read_particles` -> :class:`ParticleStack`.

Accepted inputs: RELION 3.0 star (one data block), RELION 3.1/4/5 star (``data_optics`` merged
into each particle through ``rlnOpticsGroup``), cryoSPARC ``.cs``, and a bare ``.mrcs``/``.mrc``.
Images are read lazily from memory-mapped stacks, in batches.

Path resolution of ``index@stack`` (index 1-based) and of ``.cs`` ``blob/path``
(:func:`locate_stack`): an absolute path as written; a relative one first from the project
folder (the current folder, as RELION does), then from the particle file's folder (as cryoDRGN
does), for ``.cs`` then from that folder's parent (the cryoSPARC project folder holding the job
folders), then under ``datadir``, then the file's basename under ``datadir``. How each stack was
found is kept in :attr:`ParticleStack.stack_found_via`; the star writer needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cryovae.errors import CryovaeError, InputFileError
from cryovae.io.cryosparc import read_cs
from cryovae.io.mrc import read_header
from cryovae.io.particle_stack import ParticleStack
from cryovae.io.star import read_star_particles

log = logging.getLogger(__name__)

STAR_SUFFIXES = (".star",)
CS_SUFFIXES = (".cs",)
MRC_SUFFIXES = (".mrcs", ".mrc", ".st", ".map")


#: how a stack reference was found (:attr:`ParticleStack.stack_found_via`)
FOUND_VIA = ("absolute", "cwd", "file", "project", "datadir", "datadir-basename")


def locate_stack(ref: str, base_dir: Path, datadir: Path | None, cwd: Path | None = None,
                 project_dir: Path | None = None) -> tuple[Path | None, str | None]:
    """Find the file a particle table refers to, and how it was found.

    Parameters
    ----------
    ref : the path as written (``blob/path`` without its ``>``, or the part of ``rlnImageName``
        after ``@``).
    base_dir : the particle file's folder.
    datadir : ``--datadir``, or None.
    cwd : the project folder relative paths are tried from first (RELION's convention);
        None: the current folder.
    project_dir : another folder to try after ``base_dir`` (the cryoSPARC project folder for a
        ``.cs``), or None.

    Returns
    -------
    (path, how) : the file found (absolute when found from ``cwd``) and one of
        :data:`FOUND_VIA`; ``(None, None)`` when it is nowhere.
    """
    written = Path(ref)
    candidates: list[tuple[Path, str]] = []
    if written.is_absolute():
        candidates.append((written, "absolute"))
    else:
        candidates.append(((Path.cwd() if cwd is None else Path(cwd)).absolute() / written, "cwd"))
        candidates.append((base_dir / written, "file"))
        if project_dir is not None:
            candidates.append((project_dir / written, "project"))
    if datadir is not None:
        if not written.is_absolute():
            candidates.append((datadir / written, "datadir"))
        candidates.append((datadir / written.name, "datadir-basename"))
    for cand, how in candidates:
        if cand.is_file():
            return cand, how
    return None, None


def resolve_stack(ref: str, base_dir: Path, datadir: Path | None, cwd: Path | None = None,
                  project_dir: Path | None = None) -> Path | None:
    """The file a particle table refers to, or None (:func:`locate_stack` without the how)."""
    return locate_stack(ref, base_dir, datadir, cwd, project_dir)[0]


def _split_image_names(names: pd.Series, path: Path) -> tuple[np.ndarray, list[str]]:
    """``index@stack`` strings -> (0-based indices (n,), stack refs (n,))."""
    text = names.astype(str).str.strip()
    parts = text.str.partition("@")
    has_at = (parts[1] == "@").to_numpy()
    refs = np.where(has_at, parts[2].to_numpy(dtype=object), parts[0].to_numpy(dtype=object))
    index_text = np.where(has_at, parts[0].to_numpy(dtype=object), "1")
    index = pd.to_numeric(pd.Series(index_text), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(index) | (index < 1) | (index != np.round(index))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InputFileError(f"{path}: particle {k + 1}: rlnImageName '{text.iloc[k]}' is not index@stack "
                             "with a 1-based index")
    return index.astype(np.int64) - 1, list(refs)


# --------------------------------------------------------------------- building
def _check_index_and_box(path: Path, refs: list[str], paths: list[Path | None], file_index: np.ndarray,
                         image_index: np.ndarray) -> tuple[int | None, float | None]:
    """Validate indices against the stacks found; return (box, first non-zero header voxel size)."""
    boxes: dict[int, str] = {}
    voxel: float | None = None
    max_index = np.full(len(refs), -1, dtype=np.int64)
    np.maximum.at(max_index, file_index, image_index)
    for f, (ref, stack_path) in enumerate(zip(refs, paths, strict=True)):
        if stack_path is None:
            continue
        header = read_header(stack_path)
        if header.nx != header.ny:
            raise InputFileError(f"{stack_path}: images are {header.nx} x {header.ny} pixels; only square images are supported")
        boxes.setdefault(header.nx, ref)
        if len(boxes) > 1:
            (b0, r0), (b1, r1) = list(boxes.items())[:2]
            raise InputFileError(f"{path}: mixed box sizes ({r0}: {b0} px, {r1}: {b1} px); "
                                 "re-extract the particles at one size")
        if max_index[f] >= header.n:
            k = int(np.flatnonzero((file_index == f) & (image_index >= header.n))[0])
            raise InputFileError(f"{path}: particle {k + 1} refers to image {image_index[k] + 1}@{ref} "
                                 f"but {stack_path.name} holds only {header.n} images")
        if voxel is None and header.voxel_size > 0:
            voxel = header.voxel_size
    return (next(iter(boxes)) if boxes else None), voxel


def _box_from_table(path: Path, table: pd.DataFrame) -> int | None:
    if "rlnImageSize" not in table.columns:
        return None
    sizes = np.unique(np.asarray(table["rlnImageSize"], dtype=np.int64))
    if len(sizes) > 1:
        raise InputFileError(f"{path}: mixed box sizes in rlnImageSize ({', '.join(map(str, sizes[:5]))} px); "
                             "re-extract the particles at one size")
    return int(sizes[0])


def _merge_optics(path: Path, particles: pd.DataFrame, optics: pd.DataFrame) -> pd.DataFrame:
    if "rlnOpticsGroup" not in optics.columns:
        raise InputFileError(f"{path}: data_optics has no rlnOpticsGroup column")
    if "rlnOpticsGroup" not in particles.columns:
        if len(optics) != 1:
            raise InputFileError(f"{path}: particles have no rlnOpticsGroup column but data_optics "
                                 f"lists {len(optics)} groups")
        particles = particles.assign(rlnOpticsGroup=optics["rlnOpticsGroup"].iloc[0])
    known = set(optics["rlnOpticsGroup"].tolist())
    unknown = sorted(set(particles["rlnOpticsGroup"].tolist()) - known)
    if unknown:
        raise InputFileError(f"{path}: unknown optics group {unknown[0]} (data_optics lists "
                             f"{', '.join(map(str, sorted(known)))})")
    extra = [c for c in optics.columns if c not in particles.columns or c == "rlnOpticsGroup"]
    merged = particles.merge(optics[extra], on="rlnOpticsGroup", how="left", sort=False)
    merged.index = particles.index
    return merged


def _pixel_sizes_from_table(table: pd.DataFrame) -> np.ndarray | None:
    if "rlnImagePixelSize" in table.columns:
        return np.asarray(table["rlnImagePixelSize"], dtype=np.float64)
    if "rlnDetectorPixelSize" in table.columns and "rlnMagnification" in table.columns:
        return (np.asarray(table["rlnDetectorPixelSize"], dtype=np.float64) * 1e4
                / np.asarray(table["rlnMagnification"], dtype=np.float64))
    return None


def _finish_pixel_sizes(path: Path, n: int, from_table: np.ndarray | None, voxel: float | None,
                        apix: float | None) -> np.ndarray | None:
    if apix is not None:
        if not apix > 0:
            raise CryovaeError(f"{path}: --apix must be positive, got {apix}")
        return np.full(n, float(apix))
    if from_table is not None:
        if not (np.isfinite(from_table).all() and (from_table > 0).all()):
            raise InputFileError(f"{path}: pixel size in the table is missing, zero or negative; pass --apix")
        return from_table
    if voxel is not None:
        return np.full(n, voxel)
    return None


def _read_star(path: Path, datadir: Path | None, apix: float | None, cwd: Path) -> ParticleStack:
    star = read_star_particles(path)
    particles = star.particles
    table = _merge_optics(path, particles, star.optics) if star.optics is not None else particles.copy()
    image_index, refs_per_particle = _split_image_names(particles["rlnImageName"], path)
    codes, uniques = pd.factorize(pd.Series(refs_per_particle, dtype=object))
    refs = [str(u) for u in uniques]
    found = [locate_stack(r, path.parent, datadir, cwd) for r in refs]
    stack_paths = [f[0] for f in found]
    box_hdr, voxel = _check_index_and_box(path, refs, stack_paths, codes.astype(np.int64), image_index)
    box_tab = _box_from_table(path, table)
    if box_hdr is not None and box_tab is not None and box_hdr != box_tab:
        log.warning("%s: rlnImageSize says %d px but the stacks hold %d px images; using %d",
                    path, box_tab, box_hdr, box_hdr)
    pixel_sizes = _finish_pixel_sizes(path, len(table), _pixel_sizes_from_table(table), voxel, apix)
    return ParticleStack(path, "relion31" if star.version == "3.1" else "relion30", table, star.blocks,
                         star.data_block, star.optics_block, star.version, refs, stack_paths,
                         codes.astype(np.int64), image_index, pixel_sizes,
                         box_hdr if box_hdr is not None else box_tab, star.version_comment,
                         stack_found_via=[f[1] for f in found], cwd=cwd)


def _read_cs(path: Path, datadir: Path | None, apix: float | None, cwd: Path) -> ParticleStack:
    cs = read_cs(path)
    codes, uniques = pd.factorize(pd.Series(cs.stack_refs, dtype=object))
    refs = [str(u) for u in uniques]
    found = [locate_stack(r, path.parent, datadir, cwd, project_dir=path.absolute().parent.parent) for r in refs]
    stack_paths = [f[0] for f in found]
    box_hdr, _ = _check_index_and_box(path, refs, stack_paths, codes.astype(np.int64), cs.image_index)
    table = _merge_optics(path, cs.particles, cs.optics)
    box_tab = _box_from_table(path, table)
    pixel_sizes = _finish_pixel_sizes(path, len(table), _pixel_sizes_from_table(table), None, apix)
    names = [f"{i + 1:06d}@{r}" for i, r in zip(cs.image_index, cs.stack_refs, strict=True)]
    rln = [c for c in cs.particles.columns if c.startswith("rln")]
    particles = pd.DataFrame({"rlnImageName": names}).join(cs.particles[rln].reset_index(drop=True))
    blocks = {"optics": cs.optics, "particles": particles}
    return ParticleStack(path, "cryosparc", table, blocks, "particles", "optics", None, refs, stack_paths,
                         codes.astype(np.int64), cs.image_index, pixel_sizes,
                         box_hdr if box_hdr is not None else box_tab,
                         stack_found_via=[f[1] for f in found], cwd=cwd, cs_array=cs.array)


def _read_mrc(path: Path, apix: float | None) -> ParticleStack:
    header = read_header(path)
    if header.nx != header.ny:
        raise InputFileError(f"{path}: images are {header.nx} x {header.ny} pixels; only square images are supported")
    n = header.n
    pixel_sizes = _finish_pixel_sizes(path, n, None, header.voxel_size or None, apix)
    names = [f"{k:06d}@{path.name}" for k in range(1, n + 1)]
    particles = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": np.ones(n, dtype=np.int64)})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnImageSize": [header.nx], "rlnImageDimensionality": [2]})
    if pixel_sizes is not None:
        optics.insert(2, "rlnImagePixelSize", [float(pixel_sizes[0])])
    table = _merge_optics(path, particles, optics)
    return ParticleStack(path, "mrcs", table, {"optics": optics, "particles": particles}, "particles", "optics",
                         None, [path.name], [path], np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64),
                         pixel_sizes, header.nx, stack_found_via=["file"], cwd=Path.cwd().absolute())


def read_particles(path: str | Path, datadir: str | Path | None = None, apix: float | None = None,
                   preload: bool = False, project_dir: str | Path | None = None,
                   skip_bad: bool = False) -> ParticleStack:
    """Open a particle file without loading its images.

    Parameters
    ----------
    path : ``.star`` (RELION 3.0 or 3.1+), ``.cs`` (cryoSPARC) or ``.mrcs``/``.mrc`` stack.
    datadir : folder to look for the image stacks in when they are not where the file says.
    apix : Å/pixel; overrides every pixel size found in the file or headers.
    preload : read every image into RAM now.
    project_dir : the folder relative stack paths are tried from first (RELION's project
        folder); None: the current folder. A resumed run passes the folder it started in.
    skip_bad : read every image once now and leave out the particles with NaN/infinite pixels
        or a constant image; they are kept in ``stack.skipped`` (a
        :class:`~cryovae.io.bad_particles.BadParticles`, rows of the file) and ``stack.rows``
        names the rows kept. Every particle bad is an error.

    Returns
    -------
    ParticleStack

    Raises
    ------
    InputFileError
        Missing or unreadable file, empty star or loop, no ``rlnImageName``, unknown optics
        group, index past the end of a stack, corrupt/truncated MRC, mixed or non-square
        boxes. Missing stacks are *not* an error here (see :meth:`ParticleStack.check_stacks`);
        reading their images is (and so is a missing stack with ``skip_bad``).
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, not a particle file")
    ddir = Path(datadir) if datadir is not None else None
    if ddir is not None and not ddir.is_dir():
        raise InputFileError(f"{ddir}: --datadir is not a folder")
    cwd = (Path.cwd() if project_dir is None else Path(project_dir)).absolute()
    suffix = path.suffix.lower()
    if suffix in STAR_SUFFIXES:
        stack = _read_star(path, ddir, apix, cwd)
    elif suffix in CS_SUFFIXES:
        stack = _read_cs(path, ddir, apix, cwd)
    elif suffix in MRC_SUFFIXES:
        stack = _read_mrc(path, apix)
    else:
        raise InputFileError(f"{path}: unknown particle file type '{path.suffix}' (use .star, .cs, .mrcs or .mrc)")
    log.debug("%s: %d particles, %s, box %s, %d stack file(s) (%d missing)", path, len(stack), stack.source_kind,
             stack.box_known, len(stack.stack_refs), len(stack.stacks_missing))
    if skip_bad:
        stack = _without_bad(stack)
    if preload:
        stack.check_stacks()
        stack.preload()
    return stack


def _without_bad(stack: ParticleStack) -> ParticleStack:
    """``stack`` less its bad particles (``skipped`` set), after one pass over every image."""
    stack.check_stacks()
    bad = stack.find_bad()
    if not len(bad):
        log.info("%s: --skip-bad: every one of the %d images is good", stack.path, len(stack))
        stack.skipped = bad
        return stack
    if len(bad) == len(stack):
        values = np.unique(bad.values)
        if not bad.nonfinite.any() and len(values) == 1:
            raise InputFileError(f"{stack.path}: every image is constant (all pixels {float(values[0])!r}): nothing to learn")
        raise InputFileError(f"{stack.path}: every particle is bad ({bad.counts_text()}): nothing left to use")
    keep = np.setdiff1d(np.arange(len(stack)), np.searchsorted(stack.rows, bad.rows))
    good = stack.subset(keep)
    good.skipped = bad
    stack.close()
    return good


def read_run_particles(recorded: Mapping, missing_ok: bool = False) -> ParticleStack | None:
    """The particles a training run was trained on, read again the way ``train`` read them.

    Parameters
    ----------
    recorded : the run's ``config.yaml`` ``input`` mapping: ``particles`` (path), and the reading
        options ``datadir``, ``project_dir``, ``apix``, ``skip_bad`` (each may be absent or None).
    missing_ok : return None when the run names no particle file or the file is no longer
        there (else those are errors).

    Returns
    -------
    ParticleStack or None
    """
    given = recorded.get("particles")
    if missing_ok and (not given or not Path(given).is_file()):
        return None
    if not given:
        raise InputFileError("the run's config.yaml names no input particles")
    return read_particles(given, datadir=recorded.get("datadir"), apix=recorded.get("apix"),
                          project_dir=recorded.get("project_dir"), skip_bad=bool(recorded.get("skip_bad")))


def read_star_table(path: str | Path) -> pd.DataFrame:
    """The per-particle table of a particle file (optics merged), without checking stacks."""
    return read_particles(path).table
