#!/usr/bin/env bash
# Set up .venv with cryovae installed (CPU build of PyTorch unless one is already there).
#   bash scripts/setup.sh         the command suite
#   bash scripts/setup.sh --dev   + napari (PyQt6), test and lint tools; as root on Debian it also
#                                 installs the X/OpenGL libraries napari needs under Xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1
python=${PYTHON:-python3}

apt_pkgs="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libdbus-1-3 libfontconfig1
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1"
if [ "$dev" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  if ! dpkg -s $apt_pkgs >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $apt_pkgs >/dev/null
    else
      echo "setup: napari tests need these Debian packages (run as root to install):" $apt_pkgs >&2
    fi
  fi
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
# pip's exit status is kept; only this machine's noise about absent local indexes is dropped.
pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip_install --upgrade pip
# The CPU build first, so that nothing below pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0"
if [ "$dev" = 1 ]; then
  pip_install -e ".[dev]"
else
  pip_install -e .
fi
.venv/bin/python -c "import cryovae, torch, e2cnn; print('cryovae', cryovae.__version__, '| torch', torch.__version__)"
