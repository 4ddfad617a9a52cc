#!/usr/bin/env bash
# Creates a Python 3.11 venv that runs the official DriveVLA-W0 code (the Emu3 vision tokenizer of its
# reference/Emu3) for the reference suite, with the transformers version the official code pins.
#
# Usage: bash scripts/drivevla_reference_env.sh VENV
#
#   VENV  the venv to create or update (idempotent: rerunning only installs what is missing)
#
# Get the official sources with `git clone https://github.com/BraveGroup/DriveVLA-W0`, then run the suite:
#
#   W0SIM_DRIVEVLA_SRC=../ref/DriveVLA-W0 W0SIM_DRIVEVLA_PYTHON=VENV/bin/python .venv/bin/python -m pytest -m drivevla_reference
#
# The official code is imported from its checkout as it is; nothing is copied, stubbed or patched.
set -euo pipefail

if [ $# -ne 1 ]; then
    sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
VENV=$1
PYTHON=${PYTHON:-python3.11}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# reference/Emu3/requirements.txt pins transformers 4.44.0; torch is the CPU build (any recent one runs it).
"$VENV/bin/python" -m pip install --quiet torch==2.13.0 transformers==4.44.0 safetensors numpy
"$VENV/bin/python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
