#!/usr/bin/env bash
# Open the stars `cryovae train` and `cryovae encode` write with third-party readers, from a
# folder other than the one they were written in (docs/conventions.md, "Paths in written stars").
#
# Not part of the test suite: cryoDRGN is not a cryovae dependency. Install it in its own venv:
#   python3 -m venv /work/peers/cryodrgn
#   /work/peers/cryodrgn/bin/pip install torch==2.13.0 cryodrgn==4.3.1
#
# Usage: bash benchmarks/check_third_party_readers.sh [WORKDIR]
#   CRYOVAE_PY  python with cryovae's dependencies  [this checkout's .venv/bin/python]
#   CRYODRGN    cryoDRGN's venv bin folder            [/work/peers/cryodrgn/bin]
# Lays out a RELION project in WORKDIR (default: a new temporary folder):
#   Extract/job010/particles.{mrcs,star}    simulated hinge particles (star-relative paths, CTF)
#   Refine3D/job020/run_data.star           the same particles, paths relative to the project folder
#   cryovae/run1/particles.star             cryovae train, run from the project folder
#   cryovae/encoded.star                    cryovae encode of the project star
#   cryovae/encoded_rel.star                cryovae encode of the star-relative star
# then, from WORKDIR/elsewhere, reads each written star with cryovae info, starfile, cryoDRGN's
# ImageSource (pixels compared with the simulated stack), parse_pose_star, parse_ctf_star and
# downsample. Exits non-zero at the first reader that fails.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CRYOVAE_PY="${CRYOVAE_PY:-$REPO/.venv/bin/python}"
CRYODRGN="${CRYODRGN:-/work/peers/cryodrgn/bin}"
WORK="${1:-$(mktemp -d -t cryovae_readers.XXXXXX)}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's cryovae
cryovae() { "$CRYOVAE_PY" -m cryovae.cli.main "$@"; }

BOX=24
APIX=6
TINY=(--box "$BOX" --group p4 --zdim 1 --enc-fields 4 --enc-kernel 9 --enc-layers 0 --gen-hidden 32
      --gen-layers 1 --fourier-features 16 --batch-size 32 --epochs 1 --z-delay 0 --refine-steps 0
      --device cpu --seed 0)

mkdir -p "$WORK/elsewhere"
cd "$WORK"
echo "== project $WORK"
cryovae simulate hinge --n 64 --box "$BOX" --apix "$APIX" --snr 1 --ctf --seed 2 -o Extract/job010 >/dev/null
mkdir -p Refine3D/job020 cryovae
sed 's#@particles.mrcs#@Extract/job010/particles.mrcs#' Extract/job010/particles.star > Refine3D/job020/run_data.star
cryovae train Refine3D/job020/run_data.star -o cryovae/run1 "${TINY[@]}"
cryovae encode cryovae/run1 Refine3D/job020/run_data.star -o cryovae/encoded.star --device cpu --refine-steps 0
cryovae encode cryovae/run1 Extract/job010/particles.star -o cryovae/encoded_rel.star --device cpu --refine-steps 0
cryovae select cryovae/run1 --z1 50%: -o cryovae/selected.star

cd "$WORK/elsewhere"
for star in "$WORK/cryovae/run1/particles.star" "$WORK/cryovae/encoded.star" "$WORK/cryovae/encoded_rel.star"; do
    name="$(basename "$(dirname "$star")")_$(basename "$star" .star)"
    echo
    echo "==== $star  (read from $PWD)"
    echo "-- rlnImageName (first row):"
    grep -m1 -o '[0-9]*@[^[:space:]]*' "$star"
    echo "-- cryovae info"
    cryovae info "$star"
    echo "-- starfile.read"
    "$CRYODRGN/python" - "$star" <<'EOF'
import sys
import starfile
blocks = starfile.read(sys.argv[1], always_dict=True)
for name, df in blocks.items():
    print(f"{name}: {df.shape[0]} rows; columns {', '.join(map(str, df.columns))}")
EOF
    echo "-- cryodrgn ImageSource.from_file (pixels vs the simulated stack)"
    "$CRYODRGN/python" - "$star" "$WORK/Extract/job010/particles.mrcs" <<'EOF'
import sys
import numpy as np
from cryodrgn.source import ImageSource
src = ImageSource.from_file(sys.argv[1], lazy=True)
imgs = np.asarray(src.images())
ref = np.asarray(ImageSource.from_file(sys.argv[2], lazy=True).images())
print(f"ImageSource: {src.n} images of {src.D} px; identical to the input stack: {np.array_equal(imgs, ref)}")
if not np.array_equal(imgs, ref):
    sys.exit(1)
EOF
    echo "-- cryodrgn parse_pose_star"
    "$CRYODRGN/cryodrgn" parse_pose_star "$star" -o "$name.pose.pkl" 2>&1
    echo "-- cryodrgn parse_ctf_star"
    "$CRYODRGN/cryodrgn" parse_ctf_star "$star" -o "$name.ctf.pkl" 2>&1
    echo "-- cryodrgn downsample"
    "$CRYODRGN/cryodrgn" downsample "$star" -D 16 -o "$name.ds16.mrcs" 2>&1
    "$CRYODRGN/python" - "$name.pose.pkl" "$name.ctf.pkl" "$name.ds16.mrcs" "$star" <<'EOF'
import pickle
import sys
import numpy as np
import starfile
from cryodrgn.source import ImageSource
with open(sys.argv[1], "rb") as fh:
    rot, trans = pickle.load(fh)
with open(sys.argv[2], "rb") as fh:
    ctf = pickle.load(fh)
ds = np.asarray(ImageSource.from_file(sys.argv[3], lazy=True).images()).shape
df = starfile.read(sys.argv[4], always_dict=True)["particles"]
psi = np.radians(df["rlnAnglePsi"].to_numpy())
print(f"pose.pkl: rot {rot.shape}, trans {trans.shape}; ctf.pkl: {ctf.shape}; downsampled stack: {ds}")
print(f"rot[0] = {np.round(rot[0], 4).tolist()}; cos(psi[0]) = {np.cos(psi[0]):.4f}")
EOF
done

echo
echo "==== $WORK/cryovae/selected.star (cryovae select; read from $PWD)"
"$CRYODRGN/python" - "$WORK/cryovae/selected.star" "$WORK/Extract/job010/particles.mrcs" <<'EOF'
import sys
import numpy as np
import starfile
from cryodrgn.source import ImageSource
src = ImageSource.from_file(sys.argv[1], lazy=True)
df = starfile.read(sys.argv[1], always_dict=True)["particles"]
idx = np.array([int(n.split("@")[0]) - 1 for n in df["rlnImageName"]])
ref = np.asarray(ImageSource.from_file(sys.argv[2], lazy=True).images())[idx]
same = np.array_equal(np.asarray(src.images()), ref)
print(f"ImageSource: {src.n} images of {src.D} px (starfile: {len(df)} rows); the selected particles' pixels: {same}")
if not same or src.n != len(df):
    sys.exit(1)
EOF
"$CRYODRGN/cryodrgn" parse_pose_star "$WORK/cryovae/selected.star" -o selected.pose.pkl 2>&1
echo
echo "all readers opened every star from $PWD"
