#!/usr/bin/env bash
# Runs the test suite in the project's virtual environment (created on first use).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
exec "${W0SIM_VENV:-$root/.venv}/bin/python" -m pytest -n "${W0SIM_TEST_WORKERS:-2}" "$@"
