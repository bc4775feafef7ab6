#!/usr/bin/env bash
# Make the pictures of docs/analysis.md from two trained runs (the real commands, nothing else).
#
#   bash examples/make_analysis_pictures.sh RUN_HINGE RUN_ARMS [DOCS_IMG]
#
# RUN_HINGE: a `cryovae train --zdim 1` run on `cryovae simulate hinge`;
# RUN_ARMS:  a `cryovae train --zdim 2` run on `cryovae simulate arms`.
# The docs' pictures come from the runs of benchmarks/quality.py (docs/quality/README.md says how
# they were trained). Writes RUN/traversal/ and RUN/analysis/ (as a user would get them) and copies
# the pictures into DOCS_IMG (default docs/img).
set -euo pipefail
hinge=${1:?usage: make_analysis_pictures.sh RUN_HINGE RUN_ARMS [DOCS_IMG]}
arms=${2:?usage: make_analysis_pictures.sh RUN_HINGE RUN_ARMS [DOCS_IMG]}
img=${3:-$(dirname "$0")/../docs/img}
cryovae=${CRYOVAE:-cryovae}
mkdir -p "$img"

"$cryovae" traverse "$hinge" --steps 10
"$cryovae" traverse "$arms" --steps 7
# two particles from opposite ends of z1 (1-based rows of particles.star)
read -r a b < <(python - "$hinge" <<'EOF'
import sys
import numpy as np
z = np.load(f"{sys.argv[1]}/latents.npz")["z_mean"][:, 0]
order = np.argsort(z)
print(order[len(z) // 20] + 1, order[-len(z) // 20] + 1)
EOF
)
"$cryovae" traverse "$hinge" --between "$a" "$b" --steps 10
"$cryovae" analyze "$hinge" --k 4
"$cryovae" analyze "$arms" --k 4

cp "$hinge/traversal/traversal.png" "$img/hinge_traversal.png"
cp "$hinge/traversal/traversal.gif" "$img/hinge_traversal.gif"
cp "$hinge/traversal/between_${a}_${b}.png" "$img/hinge_between.png"
cp "$arms/traversal/traversal.png" "$img/arms_traversal.png"
for f in latent clusters cluster_centers poses learning_curve examples; do
    cp "$hinge/analysis/$f.png" "$img/hinge_$f.png"
    cp "$arms/analysis/$f.png" "$img/arms_$f.png"
done
echo "pictures in $img (between particles $a and $b)"
