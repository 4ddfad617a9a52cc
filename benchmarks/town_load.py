"""Time loading every CARLA fixture town into a RoadMap; print one JSON object of per-town figures.

Reads the towns from $W0SIM_SHARED/fixtures/carla/maps (default: ../shared beside the checkout).
Per town: seconds (best of `--repeats` loads), lanes, connectors, lights, signal plans, stop signs, km of lanes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from scenarios.opendrive import load_town

MAPS = Path(os.environ.get("W0SIM_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "fixtures/carla/maps"


def measure(path: Path, repeats: int) -> dict:
    """Best load time of `repeats` loads, and the town's size."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        town = load_town(path)
        times.append(time.perf_counter() - start)
    road_map = town.road_map
    return {
        "seconds": round(min(times), 3),
        "lanes": len(road_map.lanes),
        "connectors": sum(lane.is_connector for lane in road_map.lanes),
        "lights": len(town.lights),
        "synthesised_lights": town.synthesised_lights,
        "signal_plans": len(town.signal_plans),
        "stop_signs": len(road_map.stop_signs),
        "lane_km": round(float(road_map.lane_lengths.sum()) / 1000.0, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = sorted(MAPS.glob("*.xodr"))
    if not paths:
        sys.exit(f"no .xodr towns under {MAPS} (set W0SIM_SHARED to the folder holding fixtures/)")
    print(json.dumps({path.stem: measure(path, args.repeats) for path in paths}, indent=1))


if __name__ == "__main__":
    main()
