#!/usr/bin/env bash
# Conformation and rotation recovery on a simulated hinge, with the commands a user types.
#
#   bash examples/hinge_recovery.sh [OUT]        (OUT defaults to ./hinge_recovery)
#
# 4000 particles of 40 px (4 Å/px) of a two-domain particle whose arm turns through 40 degrees
# (like spatial-VAE's 5HDB set), uniform in-plane rotation, centres off by 1.5 px (std), SNR 1.
# TARGET-VAE P8 with z = 1 is trained on them with the default command, no tuned option, and the
# star it writes is scored against the truth: |Pearson(z1, conformation)| and the circular
# correlation of psi (spatial-VAE's Table 1 measures). These are the commands of the hinge-1 row,
# seed 1, of benchmarks/quality.py; docs/quality gives the figures and the time this took.
set -euo pipefail
out=${1:-hinge_recovery}
cryovae=${CRYOVAE:-cryovae}

"$cryovae" simulate hinge -o "$out/data" --n 4000 --box 40 --snr 1 --shift-sigma 1.5 --seed 1
"$cryovae" train "$out/data/particles.star" -o "$out/run" --group p8 --zdim 1
"$cryovae" evaluate "$out/run/particles.star" "$out/data/truth.csv" -o "$out/evaluation"
