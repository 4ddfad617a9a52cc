#!/usr/bin/env bash
# Creates a Python 3.11 venv that runs NAVSIM's own scorer (one NAVSIM tag + nuplan-devkit) for the reference suite.
#
# Usage: bash scripts/navsim_reference_env.sh NAVSIM_SRC NUPLAN_SRC VENV
#
#   NAVSIM_SRC  a checkout of ONE NAVSIM tag (both tags install the package `navsim`, so one venv per tag)
#   NUPLAN_SRC  a checkout of nuplan-devkit (master)
#   VENV        the venv to create or update (idempotent: rerunning only installs what is missing)
#
# Neither project is on PyPI (the PyPI package called `navsim` is an unrelated project). Get the sources with:
#
#   git clone --branch v1.1 https://github.com/autonomousvision/navsim navsim-v1.1
#   git clone --branch v2.2 https://github.com/autonomousvision/navsim navsim-v2.2
#   git clone https://github.com/motional/nuplan-devkit nuplan-devkit
#
# then, for example:
#
#   bash scripts/navsim_reference_env.sh ../ref/navsim-v1.1 ../ref/nuplan-devkit ../ref/venv-navsim-v1.1
#   bash scripts/navsim_reference_env.sh ../ref/navsim-v2.2 ../ref/nuplan-devkit ../ref/venv-navsim-v2.2
#
# Both sources are installed editable and without their pinned requirements (nuplan-devkit pins an old stack);
# the packages below are what NAVSIM's metric caching and scoring import (rasterio, retry and pytest for
# nuplan-devkit's map database and S3 helpers). Nothing is stubbed or patched.
set -euo pipefail

if [ $# -ne 3 ]; then
    sed -n '4,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
NAVSIM_SRC=$(cd "$1" && pwd)
NUPLAN_SRC=$(cd "$2" && pwd)
VENV=$3
PYTHON=${PYTHON:-python3.11}

for f in "$NAVSIM_SRC/navsim/common/dataclasses.py" "$NUPLAN_SRC/nuplan/database/maps_db/gpkg_mapsdb.py"; do
    [ -f "$f" ] || { echo "not a NAVSIM / nuplan-devkit checkout: $f is missing" >&2; exit 2; }
done

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
VENV=$(cd "$VENV" && pwd)
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

# torch: the CPU build. PyTorch's CPU index first; where it is unreachable, PyPI's torch (the CPU build on a
# machine without CUDA).
TORCH=2.13.0
if ! "$PY" -c "import torch" 2>/dev/null; then
    if "$PY" -m pip download -q --no-deps --timeout 10 --retries 0 -d "$VENV/.probe" "torch==$TORCH+cpu" \
            --index-url https://download.pytorch.org/whl/cpu >/dev/null 2>&1; then
        "$PY" -m pip install -q "$VENV"/.probe/torch-*.whl
    else
        "$PY" -m pip install -q "torch==$TORCH"
    fi
    rm -rf "$VENV/.probe"
fi

"$PY" -m pip install -q "numpy>=2" scipy "shapely>=2" pandas geopandas pyogrio pyquaternion hydra-core omegaconf tqdm \
    opencv-python-headless psutil pytorch-lightning aioboto3 requests matplotlib pillow rasterio retry pytest

"$PY" -m pip install -q --no-deps -e "$NUPLAN_SRC"
"$PY" -m pip install -q --no-deps -e "$NAVSIM_SRC"

"$PY" -c "
import navsim, nuplan, navsim.common.dataclasses, navsim.common.dataloader, navsim.evaluate.pdm_score
import navsim.agents.constant_velocity_agent, navsim.agents.human_agent
import navsim.planning.metric_caching.metric_cache_processor, navsim.planning.scenario_builder.navsim_scenario
print('navsim + nuplan import from', navsim.__path__[0], 'and', nuplan.__path__[0])"

TAG=$(sed -n 's/.*version="\([^"]*\)".*/\1/p' "$NAVSIM_SRC/setup.py" | head -1)
case "$TAG" in
    1.*) VAR=W0SIM_NAVSIM_V1_1_PYTHON ;;  # tag v1.1 says 1.1.0
    2.*) VAR=W0SIM_NAVSIM_V2_2_PYTHON ;;  # tag v2.2 still says 2.0.0
    *) VAR="W0SIM_NAVSIM_V1_1_PYTHON (or _V2_2_, whichever tag this is)" ;;
esac
echo
echo "Ready: NAVSIM $TAG in $VENV. Point the reference suite at it and run it:"
echo "  export $VAR=$PY"
echo "  .venv/bin/python -m pytest -m navsim tests/reference"
