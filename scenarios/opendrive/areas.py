"""Area polygons of a CARLA town: roadblocks per lane group, one intersection per junction, crosswalks."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import shapely

from scenarios.opendrive.frames import carla_to_local
from sim.map import Area, Lane

SEAM_M = 0.01  # closes float seams between neighbouring lane outlines before a union


def _merged(polygons: list[shapely.Polygon]) -> list[shapely.Polygon]:
    """Union of touching outlines, holes filled, as a list of polygons (largest first)."""
    union = shapely.union_all(shapely.buffer(np.array(polygons, dtype=object), SEAM_M, join_style="mitre"))
    parts = sorted(shapely.get_parts(union), key=lambda p: -p.area)
    return [shapely.Polygon(p.exterior) for p in parts]


def _areas(kind: str, prefix: str, groups: dict[str, list[shapely.Polygon]]) -> list[Area]:
    """Areas of one kind from grouped outlines; a group in several pieces gets numbered ids after the first."""
    areas = []
    for name, polygons in groups.items():
        for i, part in enumerate(_merged(polygons)):
            areas.append(Area(f"{prefix}{name}" if i == 0 else f"{prefix}{name}#{i}", kind, part))
    return areas


def road_areas(lanes: list[Lane], junction_of: dict[str, int]) -> list[Area]:
    """Roadblocks (id = lane group, as scorers look them up) and intersections ("junction_<id>").

    Connector lanes get no roadblock (as in NAVSIM's maps); their junction's intersection covers them.
    """
    roadblocks: dict[str, list[shapely.Polygon]] = defaultdict(list)
    junctions: dict[str, list[shapely.Polygon]] = defaultdict(list)
    for lane in lanes:
        if lane.is_connector:
            junctions[str(junction_of[lane.id])].append(lane.polygon())
        else:
            roadblocks[lane.lane_group].append(lane.polygon())
    return _areas("roadblock", "", roadblocks) + _areas("intersection", "junction_", junctions)


def crosswalk_areas(carla_map) -> list[Area]:
    """Crosswalk polygons: CARLA lists their outlines' corners in a row, each ring closed by its first point."""
    locations = carla_map.get_crosswalks()
    if not locations:
        return []
    raw = np.array([(loc.x, loc.y) for loc in locations])
    x, y, _ = carla_to_local(raw[:, 0], raw[:, 1], 0.0)
    points = np.stack([x, y], axis=1)
    areas, first = [], 0
    for i in range(1, len(points)):
        if i - first >= 3 and np.linalg.norm(points[i] - points[first]) < 1e-3:
            polygon = shapely.make_valid(shapely.Polygon(points[first:i]))
            if isinstance(polygon, shapely.Polygon) and polygon.area > 0:
                areas.append(Area(f"crosswalk_{len(areas)}", "crosswalk", polygon))
            first = i + 1
    return areas
