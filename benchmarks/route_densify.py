"""Densifying Leaderboard routes: w0sim's planner against CARLA's own GlobalRoutePlanner, seconds per route.

Counts, per route of the shared route files (30 routes, 0.56-4.96 km): w0sim cold (the town's road graph built for
this route, as the Leaderboard builds a planner per route), w0sim warm (the graph cached by an earlier route of
the town, as `w0sim eval` runs) and, where W0SIM_CARLA_REFERENCE_PYTHON names a venv made by
scripts/carla_reference_env.sh, CARLA's planner as the Leaderboard's `interpolate_trajectory` runs it (a planner
per route), in the same run. Town parsing (carla.Map) is left out of every figure.

Prints progress to stderr, then one JSON object on the last stdout line (seconds; medians and totals).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scenarios.carla_route_planner import planner_for
from scenarios.leaderboard import densify, read_routes, town_for

SHARED = Path(os.environ.get("W0SIM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURES = SHARED / "fixtures/carla"
ROUTE_FILES = ("routes_devtest.xml", "routes_testing.xml")
HARNESS = Path(__file__).resolve().parents[1] / "tests/reference/carla_planner_harness.py"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ours() -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for name in ROUTE_FILES:
        for route in read_routes(FIXTURES / "routes" / name):
            town = town_for(str(FIXTURES / "maps"), route.town)
            planner_for.cache_clear()
            start = time.perf_counter()
            densify(town, route)
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            densify(town, route)
            warm.append(time.perf_counter() - start)
            log(f"w0sim {name} route {route.route_id}: cold {cold[-1]:.3f} s, warm {warm[-1]:.3f} s")
    return cold, warm


def carla() -> list[float] | None:
    python = os.environ.get("W0SIM_CARLA_REFERENCE_PYTHON")
    if not python:
        log("W0SIM_CARLA_REFERENCE_PYTHON is not set: CARLA's planner is not timed")
        return None
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:  # run outside the project: its `agents` package would shadow CARLA's
        for name in ROUTE_FILES:
            out = Path(tmp) / f"{name}.json"
            subprocess.run([python, str(HARNESS), str(FIXTURES / "routes" / name), str(FIXTURES / "maps"), str(out)],
                           check=True, cwd=tmp)
            seconds += [route["seconds"] for route in json.loads(out.read_text()).values()]
    return seconds


def summary(seconds: list[float]) -> dict:
    return {"median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4),
            "total_s": round(sum(seconds), 3)}


def main() -> None:
    cold, warm = ours()
    result = {"routes": len(cold), "w0sim_cold_graph": summary(cold), "w0sim_cached_graph": summary(warm)}
    reference = carla()
    if reference is not None:
        result["carla_global_route_planner"] = summary(reference)
        result["cold_over_carla_per_route"] = round(statistics.median(c / r for c, r in zip(cold, reference)), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
