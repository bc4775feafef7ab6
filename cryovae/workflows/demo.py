"""The built-in end-to-end example behind ``cryovae demo``.

simulate a hinge dataset -> train TARGET-VAE (P8, z=1) -> latent star -> traversal of z1 ->
evaluation against the truth. Every step writes into one folder::

    OUT/data/        particles.mrcs, particles.star, truth.csv, simulation.json
    OUT/run/         the training run (config.yaml, checkpoints, metrics.csv, particles.star, latents.npz)
    OUT/traversal/   traversal.png / .gif / .mrcs / .csv (decoded at theta = 0, c = 0)
    OUT/hinge_motion.png   the true motion above the learned traversal of z1
    OUT/evaluation/  metrics.json, rotation.png, latents.png, translation.png

A second call with the same options reuses what is finished (the data, a completed run) and
resumes an interrupted training from its checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from cryovae.errors import CryovaeError
from cryovae.geometry import transform_image
from cryovae.runs import RunDir
from cryovae.simulate.config import SimulationConfig
from cryovae.simulate.render import render_atoms
from cryovae.simulate.simulator import simulate_hinge
from cryovae.simulate.writer import SETTINGS, STAR, TRUTH, read_truth, write_simulation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """What ``cryovae demo`` simulates and trains.

    simulation : the hinge dataset: the set of the quality benchmark's ``hinge-1`` row, seed 1
        (4,000 particles of 40 px at 4 Å/px, a 40-degree hinge, uniform rotation, centres off by
        1.5 px, SNR 1), so the demo's figures are that row's (docs/quality).
    model : :func:`cryovae.models.model_config` overrides for TARGET-VAE (P8, z=1 and the box
        are filled in; none: the defaults of ``cryovae train``).
    train : :class:`cryovae.runs.TrainConfig` overrides (none: ``cryovae train``'s defaults; the
        demo trains as the command a user types).
    traversal_steps : frames of the z1 traversal.
    """

    simulation: SimulationConfig = field(default_factory=lambda: SimulationConfig(
        n=4000, box=40, pixel_size_A=4.0, snr=1.0, shift_sigma_px=1.5, hinge_range_deg=40.0, seed=1))
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    traversal_steps: int = 10

    @classmethod
    def tiny(cls) -> DemoConfig:
        """A few seconds of work, for CI: 64 small particles, a tiny network, 2 epochs."""
        return cls(simulation=SimulationConfig(n=64, box=16, pixel_size_A=10.0, snr=1.0, shift_sigma_px=0.5, seed=1),
                   model={"enc_fields": 2, "enc_kernel": 5, "gen_hidden": 16, "fourier_features": 8},
                   train={"epochs": 2, "batch_size": 16, "val_fraction": 0.25, "z_delay_epochs": 0,
                          "refine_steps": 3},
                   traversal_steps=5)


@dataclass(frozen=True)
class DemoResult:
    """Paths of everything the demo wrote, and its evaluation metrics."""

    outdir: Path
    data_star: Path
    truth: Path
    run_dir: Path
    latent_star: Path
    traversal_png: Path
    traversal_gif: Path
    motion_png: Path
    evaluation_dir: Path
    figures: dict[str, Path]
    metrics: dict


def run_demo(outdir: str | Path, cfg: DemoConfig = DemoConfig(), device: str = "auto",
             progress: bool = True) -> DemoResult:
    """Run the whole example into ``outdir`` (see the module docstring).

    Parameters
    ----------
    outdir : output folder (created; finished steps inside it are reused).
    cfg : what to simulate and train.
    device : "auto", "cpu", "cuda" or "cuda:N".
    progress : tqdm bars for simulation, preprocessing and training.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data_dir, run_dir = outdir / "data", outdir / "run"

    sim = simulate_hinge(cfg.simulation, progress=progress)
    if not _same_simulation(data_dir, cfg.simulation):
        if RunDir(run_dir).has_checkpoint():
            raise CryovaeError(f"{run_dir}: holds a run trained on other data; use another output folder")
        log.info("step 1/4: simulating %d hinge particles into %s", len(sim), data_dir)
        write_simulation(sim, data_dir)
    else:
        log.info("step 1/4: reusing the simulation in %s", data_dir)

    log.info("step 2/4: training TARGET-VAE (P8, z=1) into %s", run_dir)
    _train(data_dir / STAR, run_dir, cfg, device, progress)

    log.info("step 3/4: latent traversal")
    from cryovae.analysis.traverse_run import TraverseConfig, traverse_run
    from cryovae.inference import TrainedRun

    run = TrainedRun.load(run_dir, device="cpu")
    trav = traverse_run(run, outdir / "traversal", TraverseConfig(steps=cfg.traversal_steps))

    log.info("step 4/4: evaluation against the truth")
    from cryovae.analysis.evaluation import evaluation_report, motion_figure
    from cryovae.analysis.metrics import align_predictions
    from cryovae.analysis.output import save_figure, write_json
    from cryovae.io import read_star_table

    truth = read_truth(data_dir / TRUTH)
    predicted, aligned, how = align_predictions(read_star_table(RunDir(run_dir).star), truth)
    metrics, figures = evaluation_report(predicted, aligned)
    metrics["join"] = how
    eval_dir = outdir / "evaluation"
    eval_dir.mkdir(exist_ok=True)
    fig_paths = {}
    for name, fig in figures.items():
        fig_paths[name] = save_figure(fig, eval_dir / f"{name}.png", dpi=110)
    write_json(metrics, eval_dir / "metrics.json")

    motion = motion_figure(motion_rows(sim, trav.frames, trav.traversal.values[:, 0], metrics),
                           title="hinge motion: truth (top) and what TARGET-VAE learned along z1 (bottom)")
    motion_png = save_figure(motion, outdir / "hinge_motion.png", dpi=110)
    return DemoResult(outdir=outdir, data_star=data_dir / STAR, truth=data_dir / TRUTH, run_dir=run_dir,
                      latent_star=RunDir(run_dir).star, traversal_png=trav.png, traversal_gif=trav.gif,
                      motion_png=motion_png, evaluation_dir=eval_dir, figures=fig_paths, metrics=metrics)


def _same_simulation(data_dir: Path, sim_cfg: SimulationConfig) -> bool:
    """True when ``data_dir`` already holds a complete simulation with these options."""
    settings = data_dir / SETTINGS
    if not all((data_dir / f).exists() for f in (SETTINGS, STAR, TRUTH, "particles.mrcs")):
        return False
    try:
        saved = json.loads(settings.read_text())
    except (OSError, ValueError):
        return False
    return all(saved.get(k) == v for k, v in asdict(sim_cfg).items())


def _train(star: Path, run_dir: Path, cfg: DemoConfig, device: str, progress: bool) -> None:
    from cryovae.models import model_config
    from cryovae.runs import TrainConfig
    from cryovae.workflows.train import train_run

    run = RunDir(run_dir)
    if run.star.exists() and run.latents_file.exists():
        log.info("reusing the finished run in %s", run_dir)
        return
    if run.has_checkpoint():
        log.info("resuming the run in %s", run_dir)
        train_run(star, run_dir, None, None, device=device, resume=True, progress=progress,
                  command_line="cryovae demo")
        return
    sim = cfg.simulation
    model_cfg = model_config("target", **{**cfg.model, "box": sim.box, "zdim": 1, "group": "p8"})
    train_cfg = TrainConfig(**cfg.train)
    train_run(star, run_dir, model_cfg, train_cfg, device=device, progress=progress, command_line="cryovae demo")


def motion_rows(sim, frames: np.ndarray, z_values: np.ndarray, metrics: dict):
    """The true motion (conformation at the 5th..95th percentiles, turned by the learned rotation
    offset so it matches the model's frame, ordered like z1) and the learned traversal."""
    k = len(frames)
    conf = np.percentile(sim.conformation[:, 0], np.linspace(5, 95, k))
    r = metrics.get("conformation", {}).get("pearson", {}).get("cryovaeZ1", {}).get("conformation_1", 1.0)
    if np.isfinite(r) and r < 0:
        conf = conf[::-1]
    cfg = sim.config
    coords = sim.molecule.coordinates(conf[:, None])
    truth = render_atoms(coords, np.zeros(k), np.zeros((k, 2)), cfg.box, cfg.pixel_size_A, cfg.atom_sigma_A)
    rot = metrics["rotation"]
    if rot.get("best_fit") == "direct":
        # the model's template T' satisfies T'(q) = T(R(-offset) q)  (psi_pred = psi_true + offset)
        truth = np.stack([transform_image(t, -np.radians(rot["offset_deg"]), (0.0, 0.0)) for t in truth])
    return [("truth", truth, [f"c={c:.2f}" for c in conf]),
            ("learned z1", frames, [f"z1={z:.2f}" for z in z_values])]


def demo_config(tiny: bool = False, **overrides) -> DemoConfig:
    """The default (or ``tiny``) demo configuration with ``overrides`` of its fields."""
    cfg = DemoConfig.tiny() if tiny else DemoConfig()
    try:
        return replace(cfg, **overrides)
    except TypeError as exc:
        raise CryovaeError(str(exc)) from None
