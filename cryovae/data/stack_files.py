"""Preprocess a whole particle file once: a new ``.mrcs`` plus a RELION 3.1 star pointing at it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cryovae.data.preprocess import ConstantImages, PreprocessConfig, preprocess_images
from cryovae.errors import CryovaeError
from cryovae.io import (
    ParticleStack,
    open_stack_for_writing,
    refuse_overwrite_input,
    relion31_blocks,
    write_star,
)
from cryovae.io.particles_star import path_for_star, relion_project_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessResult:
    """What :func:`preprocess_particle_file` wrote: paths, count, new box (px) and pixel size (Å)."""

    star: Path
    stack: Path
    n_particles: int
    box: int
    pixel_size: float


def preprocess_chunks(stack: ParticleStack, preprocess: dict | PreprocessConfig, batch_size: int = 1024,
                      progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every particle of ``stack`` through :func:`cryovae.data.preprocess_images`, chunk by chunk,
    in file order: yields ``(idx (b,), images (b, box, box) float32)`` with ``box =
    preprocess["box"]``; only one chunk is in memory at a time. Constant images: all of them is an
    error (raised after the last chunk), a few one warning (:class:`cryovae.data.ConstantImages`).
    """
    pcfg = preprocess if isinstance(preprocess, PreprocessConfig) else PreprocessConfig(**preprocess)
    constant = ConstantImages(str(stack.path), stack.rows)
    for idx, images in tqdm(stack.chunks(batch_size), desc="preprocessing", disable=not progress,
                            total=-(-len(stack) // batch_size)):
        constant.add(idx, images)
        yield idx, preprocess_images(np.asarray(images, np.float32), pcfg)
    constant.check()


def preprocess_stack(stack: ParticleStack, preprocess: dict | PreprocessConfig, batch_size: int = 1024,
                     progress: bool = True) -> np.ndarray:
    """All particles of ``stack`` preprocessed (:func:`preprocess_chunks`), as one (n, box, box)
    float32 array in memory."""
    pcfg = preprocess if isinstance(preprocess, PreprocessConfig) else PreprocessConfig(**preprocess)
    out = np.empty((len(stack), pcfg.box, pcfg.box), np.float32)
    for idx, images in preprocess_chunks(stack, pcfg, batch_size, progress):
        out[idx] = images
    return out


def preprocess_particle_file(stack: ParticleStack, cfg: PreprocessConfig, out_star: str | Path,
                             batch_size: int = 1024, progress: bool = True,
                             absolute_paths: bool = False) -> PreprocessResult:
    """Preprocess every particle of ``stack`` into ``OUT.mrcs`` and write ``OUT.star``.

    The stack is streamed in chunks of ``batch_size`` through a memory-mapped output file, so
    a large stack never sits in RAM. The star is RELION 3.1 (optics block with the new
    ``rlnImagePixelSize = apix * N / box`` and ``rlnImageSize = box``), keeps every
    per-particle column (RELION 3.0 input is converted: pixel origins to Å, optics groups
    built) and points ``rlnImageName`` at the new stack (1-based indices). Both writes are
    atomic; writing onto an input file is refused.

    Parameters
    ----------
    stack : the particles to preprocess.
    cfg : preprocessing options (``cfg.box`` None keeps the size).
    out_star : output ``.star``; the stack goes beside it with the same stem and ``.mrcs``.
    absolute_paths : name the new stack by its absolute path in ``rlnImageName``. Otherwise
        by the rule of :func:`cryovae.io.particles_star.path_for_star`: relative to the star,
        or absolute when the input's stacks were found from the current (RELION project) folder
        and that relative path does not lead there from it.
    """
    out_star = Path(out_star)
    if out_star.suffix.lower() != ".star":
        raise CryovaeError(f"{out_star}: the output must be a .star file")
    out_stack = out_star.with_suffix(".mrcs")
    inputs = [stack.path, *[p for p in stack.stack_paths if p is not None]]
    refuse_overwrite_input(out_star, inputs)
    refuse_overwrite_input(out_stack, inputs)
    if not out_star.parent.is_dir():
        raise CryovaeError(f"{out_star}: output folder {out_star.parent} does not exist")
    stack.check_stacks()
    size = stack.box
    box = cfg.output_box(size)
    if stack.pixel_sizes is None:
        raise CryovaeError(f"{stack.path}: pixel size unknown; pass --apix")
    factor = size / box
    blocks = relion31_blocks(stack, out_star.parent, absolute_paths)
    optics = blocks["optics"]
    if "rlnImagePixelSize" not in optics.columns:
        raise CryovaeError(f"{stack.path}: data_optics has no rlnImagePixelSize; pass --apix")
    optics["rlnImagePixelSize"] = np.asarray(optics["rlnImagePixelSize"], np.float64) * factor
    optics["rlnImageSize"] = box
    data_block = stack.data_block if stack.source_kind == "relion31" else "particles"
    particles = blocks[data_block].reset_index(drop=True)
    rel = path_for_star(out_stack, out_star.parent, relion_project_folder(stack), absolute_paths)
    particles["rlnImageName"] = [f"{k:06d}@{rel}" for k in range(1, len(stack) + 1)]
    blocks[data_block] = particles
    new_apix = float(stack.pixel_sizes[0]) * factor

    n = len(stack)
    constant = ConstantImages(str(stack.path), stack.rows)
    with open_stack_for_writing(out_stack, n, box, new_apix) as out:
        with tqdm(total=n, desc="preprocessing", unit="particle", disable=not progress) as bar:
            for idx, images in stack.chunks(batch_size):
                constant.add(idx, images)
                out[idx[0]:idx[-1] + 1] = preprocess_images(images, cfg, source=str(stack.path),
                                                            first_index=int(idx[0]))
                bar.update(len(idx))
        constant.check()  # every image constant: nothing is written
    version = stack.version_comment if stack.version_comment and stack.version_comment >= 30001 else 30001
    write_star(out_star, blocks, version=version)  # RELION 5 input keeps its 50001
    log.info("wrote %d particles of %d px (%.4g Å/px) to %s and %s", n, box, new_apix, out_stack, out_star)
    return PreprocessResult(star=out_star, stack=out_stack, n_particles=n, box=box, pixel_size=new_apix)
