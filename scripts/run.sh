#!/usr/bin/env bash
# The main job on the embedded simulator (virtual environment created on first use): the shipped
# DriveVLA-W0 tiny checkpoint evaluated on the first 50 scenes of builtin:navtest, with the score
# table (terminal, out/eval/summary.md, NAVSIM's CSV out/eval/scores.csv) and one world-model
# rollout video (out/eval/videos/*.mp4 + contact sheet). Extra arguments go to `w0sim eval`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
exec "${W0SIM_VENV:-$root/.venv}/bin/w0sim" eval --agent drivevla_w0 --split builtin:navtest --limit 50 \
    --videos 1 --out out/eval "$@"
