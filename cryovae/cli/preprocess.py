"""Fourier-crop, invert, normalise and mask a particle stack once; write a new stack and star.

Example: cryovae preprocess particles.star --box 40 --invert -o prep/particles40.star
(writes prep/particles40.mrcs and prep/particles40.star, RELION 3.1, pointing at it)
"""

from __future__ import annotations

from pathlib import Path

import click

from cryovae.cli.options import particle_reading_options


@click.command(name="preprocess")
@click.argument("particles", type=click.Path(path_type=Path))
@click.option("--box", type=int, default=None, help="Output box in pixels (Fourier crop; even). Default: keep.")
@click.option("--invert", is_flag=True, help="Invert the contrast.")
@click.option("--normalize", type=click.Choice(["background", "image", "none"]), default="background",
              show_default=True, help="Per-particle zero mean / unit std from the background outside a "
              "circle (RELION-like), the whole image, or not at all.")
@click.option("--bg-radius", type=float, default=None,
              help="Background circle radius in output pixels. Default: 0.75 * box / 2.")
@click.option("--mask", "mask", is_flag=True, help="Apply a soft circular mask (radius 0.9 * box / 2).")
@click.option("--mask-radius", type=float, default=None, help="Soft mask radius in output pixels (implies --mask).")
@particle_reading_options
@click.option("--batch-size", type=int, default=1024, show_default=True, help="Particles per chunk.")
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True,
              help="Output .star; the stack is written beside it as .mrcs.")
@click.option("--absolute-paths", is_flag=True, help="Name the new stack by its absolute path in rlnImageName.")
def command(particles: Path, box: int | None, invert: bool, normalize: str, bg_radius: float | None, mask: bool,
            mask_radius: float | None, datadir: Path | None, apix: float | None, skip_bad: bool, batch_size: int,
            out: Path, absolute_paths: bool) -> None:
    """Preprocess PARTICLES (.star, .cs, .mrcs) into OUT.mrcs plus a RELION 3.1 OUT.star.

    Example: cryovae preprocess particles.star --box 40 --invert -o particles40.star
    """
    from cryovae.data import PreprocessConfig, preprocess_particle_file
    from cryovae.errors import CryovaeError
    from cryovae.io import read_particles
    from cryovae.io.bad_particles import bad_list_path, report_skipped

    if batch_size < 1:
        raise CryovaeError(f"--batch-size {batch_size}: must be at least 1")
    stack = read_particles(particles, datadir=datadir, apix=apix, skip_bad=skip_bad)
    stack.check_stacks()
    out_box = box if box is not None else stack.box
    if mask and mask_radius is None:
        mask_radius = 0.9 * out_box / 2
    cfg = PreprocessConfig(box=box, invert=invert, normalize=normalize, bg_radius=bg_radius, mask_radius=mask_radius)
    result = preprocess_particle_file(stack, cfg, out, batch_size=batch_size, absolute_paths=absolute_paths)
    report_skipped(stack, bad_list_path(out))
    click.echo(f"{result.n_particles} particles, box {result.box} px, {result.pixel_size:.4g} Å/px")
    click.echo(f"  stack {result.stack}")
    click.echo(f"  star  {result.star}")
