#!/usr/bin/env bash
# Creates a Python 3.11 venv that runs CARLA's global route planner and the Leaderboard's statistics code, offline
# (no CARLA server), for the reference suite `pytest -m carla_reference tests/reference`.
#
# Usage: bash scripts/carla_reference_env.sh SCENARIO_RUNNER_SRC LEADERBOARD_SRC VENV
#
#   SCENARIO_RUNNER_SRC  a checkout of carla-simulator/scenario_runner (tag v0.9.16)
#   LEADERBOARD_SRC      a checkout of carla-simulator/leaderboard (master, the Leaderboard 2.x code)
#   VENV                 the venv to create or update (idempotent)
#
# The `carla` wheel on PyPI has no `agents` package: CARLA ships its route planner in PythonAPI/carla/agents.
# scenario_runner carries the same files in srunner/tests/carla_mocks/agents; that folder also holds a carla.py
# mock, so only its `agents` package is linked into the venv, next to the real carla client. Get the sources with:
#
#   git clone --branch v0.9.16 https://github.com/carla-simulator/scenario_runner
#   git clone https://github.com/carla-simulator/leaderboard
#
# then, for example:
#
#   bash scripts/carla_reference_env.sh ../ref/scenario_runner ../ref/leaderboard ../ref/venv-carla
#
# AGENTS_SRC=.../PythonAPI/carla (a CARLA release's PythonAPI) links CARLA's own `agents` package instead.
# Nothing is copied into w0sim, stubbed or patched.
set -euo pipefail

if [ $# -ne 3 ]; then
    sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
SR_SRC=$(cd "$1" && pwd)
LB_SRC=$(cd "$2" && pwd)
VENV=$3
PYTHON=${PYTHON:-python3.11}
AGENTS_SRC=${AGENTS_SRC:-$SR_SRC/srunner/tests/carla_mocks}

for f in "$AGENTS_SRC/agents/navigation/global_route_planner.py" "$SR_SRC/srunner/scenariomanager/traffic_events.py" \
         "$LB_SRC/leaderboard/utils/statistics_manager.py" "$LB_SRC/scripts/merge_statistics.py"; do
    [ -f "$f" ] || { echo "not a scenario_runner / leaderboard checkout: $f is missing" >&2; exit 2; }
done

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
VENV=$(cd "$VENV" && pwd)
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# The planner: carla (offline carla.Map), networkx, numpy. The statistics code: dictor, requests (checkpoint_tools).
"$PY" -m pip install -q "carla==0.9.16" networkx numpy dictor requests

mkdir -p "$VENV/carla-agents"
ln -sfn "$AGENTS_SRC/agents" "$VENV/carla-agents/agents"
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\n' "$VENV/carla-agents" "$SR_SRC" "$LB_SRC" > "$SITE/w0sim_carla_reference.pth"
echo "$LB_SRC" > "$VENV/leaderboard-root"  # the suite runs scripts/merge_statistics.py from here

(cd "$VENV" && "$PY" -c "
import carla, networkx
from agents.navigation.global_route_planner import GlobalRoutePlanner
from leaderboard.utils.statistics_manager import StatisticsManager
from leaderboard.utils.route_indexer import RouteIndexer  # needs scenario_runner's srunner.scenarioconfigs
from srunner.scenariomanager.traffic_events import TrafficEventType
print('carla', carla.__file__, '| planner', GlobalRoutePlanner.__module__, '| statistics', StatisticsManager.__module__)")  # not from w0sim's root: its own agents package

echo
echo "Ready: CARLA's route planner and the Leaderboard's statistics code in $VENV. Run the reference suite with:"
echo "  export W0SIM_CARLA_REFERENCE_PYTHON=$PY"
echo "  .venv/bin/python -m pytest -m carla_reference tests/reference"
