"""Reference suite: CARLA's own GlobalRoutePlanner densifies the shared Leaderboard routes; w0sim's must agree.

Opt-in (`pytest -m carla_reference tests/reference`): it needs a venv made by `scripts/carla_reference_env.sh`
(the carla client, networkx and CARLA's `agents` package), named by W0SIM_CARLA_REFERENCE_PYTHON; unset, or
unable to import the planner, the suite is skipped. `carla_planner_harness.py` runs CARLA's planner as the
Leaderboard's `interpolate_trajectory` does (a planner per route, `trace_route` per pair of waypoints) on
`carla.Map(town, xodr)` of the fixture towns; w0sim densifies the same routes (`scenarios.leaderboard.densify`).
For every route of both route files: Hausdorff distance <= 2.0 m between the two dense routes, lengths within
0.5 %; the table printed (-s) also says whether the points and RoadOptions are identical and times both sides.
Two made-up routes check the cases those files lack: a waypoint on an overpass (Town04, 11 m above the road it
crosses) and a waypoint 9 m from every lane (Town01).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from tests.conftest import require_fixture

pytestmark = pytest.mark.carla_reference

HARNESS = Path(__file__).with_name("carla_planner_harness.py")
PYTHON_VAR = "W0SIM_CARLA_REFERENCE_PYTHON"
ROUTE_FILES = ("routes_devtest.xml", "routes_testing.xml")
MAX_HAUSDORFF_M = 2.0
MAX_LENGTH_ERROR = 0.005


def reference_python() -> str:
    """The reference venv's python, or skip with the reason."""
    python = os.environ.get(PYTHON_VAR)
    if not python:
        pytest.skip(f"{PYTHON_VAR} is not set: make a venv with scripts/carla_reference_env.sh and point {PYTHON_VAR} "
                    "at its bin/python")
    probe = "import carla, networkx; from agents.navigation.global_route_planner import GlobalRoutePlanner"
    try:  # not from the project root: w0sim's own `agents` package would shadow CARLA's
        check = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, cwd="/")
    except OSError as err:
        pytest.skip(f"{PYTHON_VAR}={python} does not run: {err}")
    if check.returncode != 0:
        pytest.skip(f"{PYTHON_VAR}={python} cannot import CARLA's route planner: {check.stderr.strip().splitlines()[-1:]}")
    return python


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two point sets (N, 3)."""
    return float(max(cKDTree(b).query(a)[0].max(), cKDTree(a).query(b)[0].max()))


def _made_up_routes(path: Path, town_dir: Path) -> Path:
    """A route file: an overpass waypoint (Town04, road 39 over road 47), and a waypoint 9 m off the road (Town01)."""
    import carla

    from scenarios.leaderboard import town_for

    def xyz(waypoint):
        location = waypoint.transform.location
        return location.x, location.y, location.z

    bridge = town_for(str(town_dir), "Town04").carla_map.get_waypoint(carla.Location(x=16.3, y=9.6, z=11.0))
    town01 = town_for(str(town_dir), "Town01").carla_map
    start = town01.get_waypoint(carla.Location(x=338.7, y=226.75, z=0.0))
    middle = start.next(30.0)[0]
    right = middle.transform.get_right_vector()
    off = middle.transform.location + carla.Location(x=9.0 * right.x, y=9.0 * right.y)
    routes = {"0": ("Town04", [xyz(bridge.previous(40.0)[0]), xyz(bridge), xyz(bridge.next(40.0)[0])]),
              "1": ("Town01", [xyz(start), (off.x, off.y, off.z), xyz(middle.next(30.0)[0])])}
    body = "".join(f"<route id='{rid}' town='{town}'>" + "".join(f"<waypoint x='{x}' y='{y}' z='{z}'/>" for x, y, z in pts)
                   + "</route>" for rid, (town, pts) in routes.items())
    path.write_text(f"<routes>{body}</routes>")
    return path


@pytest.mark.parametrize("name", ROUTE_FILES + ("overpass_and_far_waypoint",))
def test_dense_routes_are_carlas(name, tmp_path):
    python = reference_python()
    pytest.importorskip("carla", reason="w0sim reads CARLA towns with the carla client (pip install 'w0sim[carla]')")
    from metrics.leaderboard.criteria import route_length
    from scenarios.leaderboard import densify, read_routes, town_for
    from scenarios.opendrive import local_to_carla

    town_dir = require_fixture("carla/maps/Town01.xodr").parent
    if name in ROUTE_FILES:
        routes_file = require_fixture(f"carla/routes/{name}")
    else:
        routes_file = _made_up_routes(tmp_path / f"{name}.xml", town_dir)
    out = tmp_path / "carla.json"
    run = subprocess.run([python, str(HARNESS), str(routes_file), str(town_dir), str(out)], capture_output=True,
                         text=True, timeout=1800, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    reference = json.loads(out.read_text())

    rows, failures = [], []
    for route in read_routes(routes_file):
        town = town_for(str(town_dir), route.town)  # parsed once per town, outside the timing, as the harness does
        start = time.perf_counter()
        dense = densify(town, route)
        seconds = time.perf_counter() - start
        x, y, _ = local_to_carla(dense.points[:, 0], dense.points[:, 1], np.zeros(len(dense.points)))
        ours = np.stack([x, y, dense.points[:, 2]], -1)
        theirs = np.asarray(reference[route.route_id]["points"])
        carla_length = route_length(theirs)
        distance = hausdorff(ours, theirs)
        length = route_length(ours)
        error = abs(length - carla_length) / carla_length
        identical = ours.shape == theirs.shape and np.array_equal(ours, theirs)
        same_options = dense.road_options.tolist() == reference[route.route_id]["options"]
        rows.append(f"| {route.route_id} | {route.town} | {len(theirs)} | {carla_length:.1f} | {length:.1f} | "
                    f"{distance:.2f} | {100 * error:.3f} | {'yes' if identical and same_options else 'no'} | "
                    f"{reference[route.route_id]['seconds']:.3f} | {seconds:.3f} |")
        if distance > MAX_HAUSDORFF_M or error > MAX_LENGTH_ERROR:
            failures.append(f"route {route.route_id}: Hausdorff {distance:.2f} m, length {length:.1f} m vs "
                            f"CARLA's {carla_length:.1f} m")
    print(f"\n{name}: w0sim's dense routes against CARLA's GlobalRoutePlanner (seconds: CARLA per route with its "
          "graph build, as the Leaderboard runs it; w0sim per route with the town's graph cached after its first route)")
    print("| route | town | points | CARLA m | w0sim m | Hausdorff m | length error % | identical | CARLA s | w0sim s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    assert not failures, "\n".join(failures)
