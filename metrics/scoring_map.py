"""ScoringMap: the drivable-area polygons NAVSIM's PDM scorer sees (its cached `PDMDrivableMap`)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely

# nuPlan SemanticMapLayer names stored with each polygon.
ROADBLOCK, INTERSECTION, CARPARK_AREA = "ROADBLOCK", "INTERSECTION", "CARPARK_AREA"
LANE, LANE_CONNECTOR, DRIVABLE_AREA = "LANE", "LANE_CONNECTOR", "DRIVABLE_AREA"
LAYER_TYPES = (ROADBLOCK, INTERSECTION, CARPARK_AREA, DRIVABLE_AREA, LANE, LANE_CONNECTOR)
# The scorer's drivable-area set (spec §1.3); DRIVABLE_AREA never occurs in a cached map but is listed there.
DRIVABLE_TYPES = (ROADBLOCK, INTERSECTION, DRIVABLE_AREA, CARPARK_AREA)
LANE_TYPES = (LANE, LANE_CONNECTOR)
# sim.map area kinds -> nuPlan layer names (only the kinds the cached map holds).
_KIND_TO_LAYER = {"roadblock": ROADBLOCK, "intersection": INTERSECTION, "carpark": CARPARK_AREA}


@dataclass
class ScoringMap:
    """Polygons (M,) with nuPlan tokens and layer types, and the on-route lane / connector tokens.

    Index masks by group are precomputed: `drivable` (roadblock, intersection, carpark), `lanes` (lanes and
    lane connectors), `on_route` (lane-set polygons whose token is on the route), `intersection`.
    """

    tokens: list[str]
    types: list[str]
    polygons: np.ndarray  # (M,) shapely polygons
    route_lane_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.polygons = np.asarray(self.polygons, dtype=object).reshape(-1)
        if not (len(self.tokens) == len(self.types) == len(self.polygons)):
            raise ValueError(f"ScoringMap: {len(self.tokens)} tokens, {len(self.types)} types, "
                             f"{len(self.polygons)} polygons: counts must agree")
        unknown = sorted(set(self.types) - set(LAYER_TYPES))
        if unknown:
            raise ValueError(f"ScoringMap: unknown layer types {unknown}; expected some of {LAYER_TYPES}")
        types = np.array(self.types, dtype=object)
        route = set(self.route_lane_ids)
        self.drivable = np.isin(types, DRIVABLE_TYPES)
        self.lanes = np.isin(types, LANE_TYPES)
        self.on_route = self.lanes & np.array([t in route for t in self.tokens], dtype=bool)
        self.intersection = types == INTERSECTION
        self.token_index = {t: i for i, t in enumerate(self.tokens)}
        shapely.prepare(self.polygons)
        self.tree = shapely.STRtree(self.polygons)
        self._bounds = shapely.bounds(self.polygons).reshape(-1, 4)
        # Axis-aligned rectangles: strict containment is exactly the open bounding box (no GEOS call needed).
        self._is_box = np.array([shapely.equals(p, shapely.box(*b)) for p, b in zip(self.polygons, self._bounds)],
                                dtype=bool).reshape(-1)

    @classmethod
    def from_records(cls, records: Iterable[dict], route_lane_ids: Sequence[str] = ()) -> "ScoringMap":
        """From records {token, type, coords} (the golden fixture's `map_polygons`)."""
        records = list(records)
        polygons = [shapely.Polygon(np.asarray(r["coords"], dtype=np.float64)) for r in records]
        return cls([str(r["token"]) for r in records], [r["type"] for r in records], np.array(polygons, dtype=object),
                   [str(t) for t in route_lane_ids])

    @classmethod
    def from_road_map(cls, road_map, route_lane_ids: Sequence[str] = (), center_xy=None,
                      radius: float = 100.0) -> "ScoringMap":
        """From a `sim.map.RoadMap`: roadblock / intersection / carpark areas, then lane and connector polygons.

        Like NAVSIM's cached map there are no roadblock-connector polygons and no generic drivable areas. With
        `center_xy` (the ego box centre at cache time) only what meets the axis-aligned square of half size
        `radius` is kept: areas by their polygon, lanes through their roadblock (or their own polygon when the
        roadblock has no area polygon, e.g. connectors).
        """
        window = None if center_xy is None else shapely.box(center_xy[0] - radius, center_xy[1] - radius,
                                                             center_xy[0] + radius, center_xy[1] + radius)
        near = (lambda geometry: True) if window is None else (lambda geometry: shapely.intersects(window, geometry))
        tokens, types, polygons = [], [], []
        roadblocks = {}
        for area in road_map.areas:
            if area.kind == "roadblock":
                roadblocks[area.id] = bool(near(area.polygon))
            if area.kind in _KIND_TO_LAYER and near(area.polygon):
                tokens.append(area.id), types.append(_KIND_TO_LAYER[area.kind]), polygons.append(area.polygon)
        for lane, polygon in zip(road_map.lanes, road_map.lane_polygons):
            keep = roadblocks[lane.lane_group] if lane.lane_group in roadblocks else near(polygon)
            if keep:
                tokens.append(lane.id), types.append(LANE_CONNECTOR if lane.is_connector else LANE)
                polygons.append(polygon)
        return cls(tokens, types, np.array(polygons, dtype=object), [str(t) for t in route_lane_ids])

    def points_in_polygons(self, points: np.ndarray) -> np.ndarray:
        """(M, ...) bool: point (..., 2) strictly inside polygon m (boundary is outside, as `contains_xy`)."""
        points = np.asarray(points, dtype=np.float64)
        out = np.zeros((len(self.polygons),) + points.shape[:-1], dtype=bool)
        flat = points.reshape(-1, 2)
        x, y = flat[:, 0], flat[:, 1]
        # Broad phase: a point strictly inside a polygon is strictly inside its bounding box; the exact strict
        # test (shapely.contains_xy) runs only on those pairs.
        b = self._bounds
        in_box = (x > b[:, 0, None]) & (x < b[:, 2, None]) & (y > b[:, 1, None]) & (y < b[:, 3, None])
        flat_out = out.reshape(len(self.polygons), -1)
        flat_out[self._is_box] = in_box[self._is_box]
        poly_idx, pt_idx = np.nonzero(in_box & ~self._is_box[:, None])
        if pt_idx.size:
            inside = shapely.contains_xy(self.polygons[poly_idx], x[pt_idx], y[pt_idx])
            flat_out[poly_idx[inside], pt_idx[inside]] = True
        return out

    def polygon_of(self, token: str) -> shapely.Polygon:
        try:
            return self.polygons[self.token_index[str(token)]]
        except KeyError:
            raise ValueError(f"ScoringMap has no polygon with token {token!r}") from None
