#!/usr/bin/env bash
# Creates .venv (once) and installs w0sim with its test extras; CPU machines get the CPU PyTorch build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${W0SIM_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "w0sim: creating virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi

# Reinstall only when the requirements changed since the last successful install.
stamp="$venv/.w0sim-installed"
want="$(cat "$root/pyproject.toml" "$root/requirements/cpu.txt" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

pip=("$venv/bin/python" -m pip install --quiet)
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "w0sim: no NVIDIA GPU found, installing the CPU build of PyTorch" >&2
    # torch alone from the CPU index (its dependencies come from PyPI below); few retries, so a
    # machine that cannot reach that index falls back to what pip finds elsewhere quickly.
    "${pip[@]}" --no-deps --retries 1 --extra-index-url https://download.pytorch.org/whl/cpu -r "$root/requirements/cpu.txt"
fi
echo "w0sim: installing w0sim and its dependencies" >&2
"${pip[@]}" -e "$root[test]"
echo "$want" > "$stamp"
