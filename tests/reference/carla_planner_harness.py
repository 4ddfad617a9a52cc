"""Runs CARLA's own GlobalRoutePlanner on Leaderboard route files, as the Leaderboard's `interpolate_trajectory` does.

Executed by the reference venv's python (scripts/carla_reference_env.sh: the carla client, networkx and CARLA's
`agents` package), never imported by w0sim. For each route: a new planner on `carla.Map(town, xodr)` at 1 m,
then `trace_route` for each pair of consecutive waypoints (x, y, z as the file gives them), concatenated.
Writes JSON: {route id: {"points": [[x, y, z]...] (CARLA frame), "options": [RoadOption value...], "seconds"}}.

Usage: python carla_planner_harness.py ROUTES.xml TOWN_DIR OUT.json [ROUTE_ID ...]
"""
import json
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import carla

from agents.navigation.global_route_planner import GlobalRoutePlanner

_NO_NEXT = object()


class _DeadEndSafeWaypoint:
    """A topology entry whose `next()` is empty (a dead end shorter than a hop, 2019 Town03): the unpatched
    planner indexes that empty list and crashes; here it yields a marker that is then removed (an empty path)."""

    def __init__(self, waypoint):
        self._waypoint = waypoint

    def __getattr__(self, name):
        return getattr(self._waypoint, name)

    def next(self, distance):
        return self._waypoint.next(distance) or [_NO_NEXT]


class _DeadEndSafeMap:
    def __init__(self, carla_map, hop):
        self._map, self._hop = carla_map, hop

    def __getattr__(self, name):
        return getattr(self._map, name)

    def get_topology(self):
        return [(a if a.next(self._hop) else _DeadEndSafeWaypoint(a), b) for a, b in self._map.get_topology()]


class Planner(GlobalRoutePlanner):
    """CARLA's planner, unchanged but for dead-end topology segments getting an empty path."""

    def _build_topology(self):
        real = self._wmap
        self._wmap = _DeadEndSafeMap(real, self._sampling_resolution)
        try:
            super()._build_topology()
        finally:
            self._wmap = real
        for segment in self._topology:
            segment["path"] = [w for w in segment["path"] if w is not _NO_NEXT]
            if isinstance(segment["entry"], _DeadEndSafeWaypoint):
                segment["entry"] = segment["entry"]._waypoint


def main() -> None:
    routes_file, town_dir, out = sys.argv[1:4]
    wanted = set(sys.argv[4:])
    maps: dict[str, carla.Map] = {}
    results = {}
    for route in ElementTree.parse(routes_file).getroot().iter("route"):
        route_id, town = route.get("id"), route.get("town")
        if wanted and route_id not in wanted:
            continue
        if town not in maps:
            maps[town] = carla.Map(town, (Path(town_dir) / f"{town}.xodr").read_text())
        points = route.findall("waypoint") or route.findall("waypoints/position")
        locations = [carla.Location(x=float(p.get("x")), y=float(p.get("y")), z=float(p.get("z", "0"))) for p in points]
        start = time.perf_counter()
        planner = Planner(maps[town], 1.0)  # the Leaderboard builds one per route
        trace = []
        for a, b in zip(locations[:-1], locations[1:]):
            trace += planner.trace_route(a, b)
        seconds = time.perf_counter() - start
        results[route_id] = {
            "town": town, "seconds": seconds,
            "points": [[w.transform.location.x, w.transform.location.y, w.transform.location.z] for w, _ in trace],
            "options": [option.value for _, option in trace],
        }
        print(f"route {route_id} ({town}): {len(trace)} points in {seconds:.2f} s", file=sys.stderr, flush=True)
    Path(out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
