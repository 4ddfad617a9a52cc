#!/usr/bin/env bash
# The main job on the embedded simulator (virtual environment created on first use).
# Until `w0sim eval` lands, this drives one generated intersection scene closed-loop and writes its video.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
exec "${W0SIM_VENV:-$root/.venv}/bin/w0sim" demo --out "${1:-out/demo}"
