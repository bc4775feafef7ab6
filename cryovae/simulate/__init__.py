"""Simulated particle stacks with ground truth (hinge, two arms, discrete classes, a user's map).

Example::

    from cryovae.simulate import SimulationConfig, simulate_hinge, write_simulation
    sim = simulate_hinge(SimulationConfig(n=2000, box=40, pixel_size_A=4.0, snr=0.1, seed=1))
    write_simulation(sim, "sim_hinge")   # particles.mrcs, particles.star, truth.csv

    from cryovae.simulate import MicrographConfig, write_micrograph_simulation
    write_micrograph_simulation(MicrographConfig(n_micrographs=4, snr=0.1), "sim_mics")
"""

from cryovae.simulate.config import SimulationConfig
from cryovae.simulate.micrograph_writer import write_micrograph_simulation
from cryovae.simulate.micrographs import (
    MicrographConfig,
    MicrographPlan,
    SimulatedMicrograph,
    plan_micrographs,
    render_micrograph,
)
from cryovae.simulate.molecules import (
    CLASS_NAMES,
    ClassSpec,
    Molecule,
    arms_molecule,
    class_specs,
    hinge_molecule,
)
from cryovae.simulate.simulator import (
    SimulatedParticles,
    class_templates,
    simulate_arms,
    simulate_classes,
    simulate_hinge,
    simulate_volume,
)
from cryovae.simulate.writer import read_truth, write_simulation

__all__ = [
    "CLASS_NAMES", "ClassSpec", "MicrographConfig", "MicrographPlan", "Molecule", "SimulatedMicrograph",
    "SimulatedParticles", "SimulationConfig", "arms_molecule", "class_specs", "hinge_molecule", "plan_micrographs",
    "class_templates", "read_truth", "render_micrograph", "simulate_arms", "simulate_classes", "simulate_hinge", "simulate_volume", "write_micrograph_simulation", "write_simulation",
]
