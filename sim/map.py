"""RoadMap: lanes, lane graph and area polygons in shapely 2 arrays with STRtrees and vectorised queries."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import shapely
import shapely.errors
from shapely import STRtree

from sim.limits import MAX_ABS_COORDINATE_M, MAX_LANES, MAX_MAP_POINTS, MAX_SPEED_MPS

# Area layers, in nuPlan terms. DRIVABLE_KINDS is the drivable-area set of NAVSIM's scorer (§1.3).
AREA_KINDS = ("roadblock", "intersection", "carpark", "crosswalk", "walkway", "stop_polygon")
DRIVABLE_KINDS = ("roadblock", "intersection", "carpark")
LANE_CHANGE_M = 30.0  # a route's lane change blends the two centerlines over this distance
LANE_CHANGE_SAMPLE_M = 0.5


class MapError(ValueError):
    """A road map is malformed (unknown lane id, broken polyline, dangling graph edge...)."""


@dataclass(frozen=True)
class Lane:
    """One lane or lane connector: geometry (K, 2) polylines in driving direction, and graph links."""

    id: str
    centerline: np.ndarray
    left_boundary: np.ndarray
    right_boundary: np.ndarray
    speed_limit: float  # m/s
    lane_group: str  # roadblock (or roadblock connector) id
    successors: tuple[str, ...] = ()
    predecessors: tuple[str, ...] = ()
    is_connector: bool = False
    traffic_light: str | None = None  # id of the light controlling entry into this lane

    @cached_property
    def length(self) -> float:
        return float(np.sum(np.linalg.norm(np.diff(self.centerline, axis=0), axis=1)))

    def polygon(self) -> shapely.Polygon:
        return shapely.Polygon(np.concatenate([self.left_boundary, self.right_boundary[::-1]]))


@dataclass(frozen=True)
class Area:
    """A map area polygon (roadblock, intersection, carpark, crosswalk, walkway, stop polygon)."""

    id: str
    kind: str
    polygon: shapely.Polygon


@dataclass(frozen=True)
class StopSign:
    """A stop sign (CARLA's `traffic.stop` actor, a map landmark).

    `position` (2,) is the sign's own location (what the Leaderboard's event message reports);
    `trigger` is the footprint of its trigger volume, as given (RunningStopTest enlarges it 1.2 x
    about its centre, and measures proximity to that centre); `lane_ids` are the lanes it controls.
    """

    id: str
    position: np.ndarray
    trigger: shapely.Polygon
    lane_ids: tuple[str, ...] = ()


def _check_coordinates(map_name: str, what: str, values: np.ndarray) -> None:
    """Real, finite and within +-MAX_ABS_COORDINATE_M, or a MapError naming the map, the field and the bound."""
    if values.dtype.kind not in "iuf":
        raise MapError(f"map {map_name!r}: {what} has dtype {values.dtype}, expected real numbers")
    if not np.isfinite(values).all():
        raise MapError(f"map {map_name!r}: {what} holds non-finite values (NaN or inf)")
    if values.size and np.abs(values).max() > MAX_ABS_COORDINATE_M:
        raise MapError(f"map {map_name!r}: {what} reaches {np.abs(values).max():.6g} m, beyond the bound "
                       f"+-{MAX_ABS_COORDINATE_M:g} m")


def _check_polyline(map_name: str, what: str, line) -> int:
    """A (K >= 2, 2) polyline of plausible coordinates; returns K."""
    line = np.asarray(line)
    if line.ndim != 2 or line.shape[0] < 2 or line.shape[1] != 2:
        raise MapError(f"map {map_name!r}: {what} has shape {line.shape}, expected (K >= 2, 2)")
    _check_coordinates(map_name, what, line)
    return line.shape[0]


def _check_polygon(map_name: str, what: str, geometry, types: tuple[type, ...]) -> None:
    """A non-empty polygon of the given types with plausible coordinates."""
    if not isinstance(geometry, types) or geometry.is_empty:
        raise MapError(f"map {map_name!r}: {what} is a {getattr(geometry, 'geom_type', type(geometry).__name__)}, "
                       f"expected a non-empty {' or '.join(t.__name__ for t in types)}")
    _check_coordinates(map_name, what, shapely.get_coordinates(geometry))


def _repaired(polygons: np.ndarray) -> np.ndarray:
    """The polygons, with each invalid one (boundaries that cross: a bowtie) replaced by its valid polygonal part
    (shapely.make_valid), so that unions and overlays of lanes work; valid polygons are kept as they are."""
    invalid = np.flatnonzero(~shapely.is_valid(polygons)) if len(polygons) else np.zeros(0, dtype=np.int64)
    if invalid.size == 0:
        return polygons
    polygons = polygons.copy()
    for k in invalid:
        parts = shapely.get_parts(shapely.make_valid(polygons[k]))
        areas = [part for part in parts if isinstance(part, (shapely.Polygon, shapely.MultiPolygon))]
        polygons[k] = shapely.union_all(areas) if areas else shapely.Polygon()
    return polygons


@dataclass
class RoadMap:
    """A road network. Build once per scene; all queries are vectorised over points.

    Lanes are indexed 0..L-1 in the order given; `lane_index[id]` maps ids to indices.
    """

    lanes: list[Lane]
    areas: list[Area] = field(default_factory=list)
    name: str = "map"
    stop_signs: list[StopSign] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lane_index = {lane.id: i for i, lane in enumerate(self.lanes)}
        if len(self.lane_index) != len(self.lanes):
            raise MapError(f"map {self.name!r}: duplicate lane ids")
        if len(self.lanes) > MAX_LANES:
            raise MapError(f"map {self.name!r}: {len(self.lanes)} lanes, more than the bound {MAX_LANES}")
        points = 0
        for lane in self.lanes:
            for name in ("centerline", "left_boundary", "right_boundary"):
                points += _check_polyline(self.name, f"lane {lane.id!r} {name}", getattr(lane, name))
            if points > MAX_MAP_POINTS:
                raise MapError(f"map {self.name!r}: more than {MAX_MAP_POINTS} lane polyline points (the bound)")
            limit = lane.speed_limit
            if not isinstance(limit, (int, float, np.integer, np.floating)) or not 0.0 <= limit <= MAX_SPEED_MPS:
                raise MapError(f"map {self.name!r}: lane {lane.id!r} speed_limit {limit!r} is outside "
                               f"0..{MAX_SPEED_MPS:g} m/s")
            for other in lane.successors + lane.predecessors:
                if other not in self.lane_index:
                    raise MapError(f"map {self.name!r}: lane {lane.id!r} links to unknown lane {other!r}")
        for area in self.areas:
            if area.kind not in AREA_KINDS:
                raise MapError(f"map {self.name!r}: area {area.id!r} has unknown kind {area.kind!r}")
            _check_polygon(self.name, f"area {area.id!r} polygon", area.polygon, (shapely.Polygon, shapely.MultiPolygon))
        if len({sign.id for sign in self.stop_signs}) != len(self.stop_signs):
            raise MapError(f"map {self.name!r}: duplicate stop sign ids")
        for sign in self.stop_signs:
            for lane_id in sign.lane_ids:
                if lane_id not in self.lane_index:
                    raise MapError(f"map {self.name!r}: stop sign {sign.id!r} controls unknown lane {lane_id!r}")
            if np.shape(sign.position) != (2,):
                raise MapError(f"map {self.name!r}: stop sign {sign.id!r} position has shape {np.shape(sign.position)}")
            if not isinstance(sign.trigger, shapely.Polygon) or sign.trigger.is_empty or sign.trigger.area <= 0:
                raise MapError(f"map {self.name!r}: stop sign {sign.id!r} trigger is not a non-empty polygon")
            _check_coordinates(self.name, f"stop sign {sign.id!r} position", np.asarray(sign.position))
            _check_polygon(self.name, f"stop sign {sign.id!r} trigger", sign.trigger, (shapely.Polygon,))
        self.lane_polygons = _repaired(np.array([lane.polygon() for lane in self.lanes], dtype=object))
        self.lane_centerlines = np.array([shapely.LineString(lane.centerline) for lane in self.lanes], dtype=object)
        self.lane_tree = STRtree(self.lane_polygons)
        self._lane_changes: dict[tuple[str, str], np.ndarray] = {}
        self.lane_lengths = np.array([lane.length for lane in self.lanes])
        self.speed_limits = np.array([lane.speed_limit for lane in self.lanes])
        self._area_layers: dict[str, tuple[list[str], np.ndarray, STRtree]] = {}
        for kind in AREA_KINDS:
            items = [a for a in self.areas if a.kind == kind]
            polygons = np.array([a.polygon for a in items], dtype=object)
            self._area_layers[kind] = ([a.id for a in items], polygons, STRtree(polygons))

    # --- lookups -------------------------------------------------------------------------------

    def lane(self, lane_id: str) -> Lane:
        try:
            return self.lanes[self.lane_index[lane_id]]
        except KeyError:
            raise MapError(f"map {self.name!r} has no lane {lane_id!r}") from None

    def area_layer(self, kind: str) -> tuple[list[str], np.ndarray, STRtree]:
        """(ids, polygons, STRtree) of one area kind."""
        if kind not in self._area_layers:
            raise MapError(f"unknown area kind {kind!r}; expected one of {AREA_KINDS}")
        return self._area_layers[kind]

    @cached_property
    def drivable_area(self) -> shapely.Geometry:
        """Union of the drivable layers and all lane polygons, prepared for fast point tests."""
        parts = [self.area_layer(k)[1] for k in DRIVABLE_KINDS] + [self.lane_polygons]
        polygons = np.concatenate(parts)
        try:
            union = shapely.union_all(polygons)
        except shapely.errors.GEOSException:  # invalid polygons (a bowtie, a self-crossing boundary) somewhere
            union = self._repaired_union(polygons)
        shapely.prepare(union)
        return union

    def _repaired_union(self, polygons: np.ndarray) -> shapely.Geometry:
        """The union of the drivable polygons with the invalid ones repaired (shapely.make_valid); a MapError naming
        them where even that fails. Only maps whose plain union GEOS refuses get here: valid maps keep theirs."""
        invalid = ~shapely.is_valid(polygons)
        repaired = polygons.copy()
        repaired[invalid] = shapely.make_valid(polygons[invalid])
        try:
            return shapely.union_all(repaired)
        except shapely.errors.GEOSException as exc:
            names = [f"area {a.id!r}" for kind in DRIVABLE_KINDS for a in self.areas if a.kind == kind]
            names += [f"lane {lane.id!r}" for lane in self.lanes]
            listed = [f"{name} ({shapely.is_valid_reason(p)})" for name, p, bad in zip(names, polygons, invalid) if bad]
            raise MapError(f"map {self.name!r}: the drivable polygons cannot be combined ({exc}); invalid: "
                           f"{', '.join(listed[:3]) or 'none found'}") from None

    @cached_property
    def centerline_arc_lengths(self) -> np.ndarray:
        """(L,) centerline lengths as the end of each lane's cumulative arc length (what paths along lanes add up)."""
        return np.array([np.cumsum(np.linalg.norm(np.diff(lane.centerline, axis=0), axis=1))[-1] for lane in self.lanes])

    @cached_property
    def bounds(self) -> np.ndarray:
        """(xmin, ymin, xmax, ymax) over lanes and areas."""
        geoms = np.concatenate([self.lane_polygons, np.array([a.polygon for a in self.areas], dtype=object)])
        return shapely.total_bounds(geoms)

    # --- vectorised point queries --------------------------------------------------------------

    def is_drivable(self, points: np.ndarray) -> np.ndarray:
        """(...) bool: strictly inside the drivable area (boundary counts as outside, as in NAVSIM)."""
        points = np.asarray(points, dtype=np.float64)
        return shapely.contains_xy(self.drivable_area, points[..., 0], points[..., 1])

    def lanes_at(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (point index, lane index) for every lane polygon that contains a point of (N, 2)."""
        geoms = shapely.points(np.asarray(points, dtype=np.float64))
        pairs = self.lane_tree.query(geoms, predicate="within")
        return pairs[0], pairs[1]

    def nearest_lanes(self, poses: np.ndarray, heading_weight: float = 5.0) -> np.ndarray:
        """(N,) index of the best-matching lane for poses (N, 3): distance + weighted heading error.

        Candidates are lanes within 5 m (falling back to the nearest lane); the heading term keeps a
        vehicle on its own direction of travel where opposite lanes touch.
        """
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
        pts = shapely.points(poses[:, :2])
        cand_pt, cand_lane = self.lane_tree.query(pts, predicate="dwithin", distance=5.0)
        result = np.asarray(self.lane_tree.query_nearest(pts, all_matches=False)[1], dtype=np.int64)
        if cand_pt.size:
            dist = shapely.distance(pts[cand_pt], self.lane_centerlines[cand_lane])
            s = shapely.line_locate_point(self.lane_centerlines[cand_lane], pts[cand_pt])
            lane_heading = self.heading_at(cand_lane, s)
            err = np.abs(np.angle(np.exp(1j * (poses[cand_pt, 2] - lane_heading))))
            cost = dist + heading_weight * err
            order = np.lexsort((cost, cand_pt))
            first = np.unique(cand_pt[order], return_index=True)[1]
            result[cand_pt[order][first]] = cand_lane[order][first]
        return result

    def project(self, lane_indices: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(N,) arc length of each point's projection onto the given lanes' centerlines."""
        return shapely.line_locate_point(self.lane_centerlines[np.asarray(lane_indices)], shapely.points(points))

    def heading_at(self, lane_indices: np.ndarray, s: np.ndarray) -> np.ndarray:
        """(N,) centerline heading of the given lanes at arc lengths s."""
        lines = self.lane_centerlines[np.asarray(lane_indices)]
        s = np.asarray(s, dtype=np.float64)
        a = shapely.get_coordinates(shapely.line_interpolate_point(lines, np.maximum(s - 0.5, 0.0)))
        b = shapely.get_coordinates(shapely.line_interpolate_point(lines, s + 0.5))
        return np.arctan2(b[:, 1] - a[:, 1], b[:, 0] - a[:, 0])

    # --- lane graph ----------------------------------------------------------------------------

    def successors(self, lane_id: str) -> tuple[str, ...]:
        return self.lane(lane_id).successors

    def is_lane_change(self, from_id: str, to_id: str) -> bool:
        """True when `to_id` is not a successor of `from_id` but a parallel lane of its lane group (a lane change)."""
        a, b = self.lane(from_id), self.lane(to_id)
        return (to_id not in a.successors and to_id != from_id and a.lane_group == b.lane_group
                and not a.is_connector and not b.is_connector)

    def lane_change_centerline(self, from_id: str, to_id: str) -> np.ndarray:
        """(K, 2) path that starts on lane `from_id` and ends on the parallel lane `to_id`: the two centerlines
        blended over LANE_CHANGE_M (smoothstep) around the middle of the lane, over all of a shorter one."""
        key = (from_id, to_id)
        if key not in self._lane_changes:
            self._lane_changes[key] = self._blend(from_id, to_id)
        return self._lane_changes[key]

    def _blend(self, from_id: str, to_id: str) -> np.ndarray:
        a, b = self.lane_centerlines[self.lane_index[from_id]], self.lane_centerlines[self.lane_index[to_id]]
        length = max(a.length, b.length)
        u = np.linspace(0.0, 1.0, max(2, int(np.ceil(length / LANE_CHANGE_SAMPLE_M)) + 1))
        pa = shapely.get_coordinates(shapely.line_interpolate_point(a, u, normalized=True))
        pb = shapely.get_coordinates(shapely.line_interpolate_point(b, u, normalized=True))
        span = min(LANE_CHANGE_M, 0.8 * length)
        x = np.clip((u * length - 0.5 * (length - span)) / max(span, 1e-9), 0.0, 1.0)
        w = (x * x * (3.0 - 2.0 * x))[:, None]
        return (1.0 - w) * pa + w * pb

    def route_polyline(self, lane_ids: list[str]) -> np.ndarray:
        """(K, 2) concatenated centerlines of consecutive lanes (shared end points dropped).

        Consecutive lanes are successors or a lane change to a parallel lane (see `is_lane_change`), which is
        driven along `lane_change_centerline` instead of the two lanes' own centerlines.
        """
        parts: list[np.ndarray] = []
        for i, lane_id in enumerate(lane_ids):
            line = self.lane(lane_id).centerline
            if i > 0 and lane_id not in self.lane(lane_ids[i - 1]).successors:
                if not self.is_lane_change(lane_ids[i - 1], lane_id):
                    raise MapError(f"map {self.name!r}: route lane {lane_id!r} does not follow {lane_ids[i - 1]!r}")
                parts[-1] = self.lane_change_centerline(lane_ids[i - 1], lane_id)
                if len(parts) > 1 and np.allclose(parts[-2][-1], parts[-1][0]):
                    parts[-1] = parts[-1][1:]
                continue
            if parts and np.allclose(parts[-1][-1], line[0]):
                line = line[1:]
            parts.append(line)
        return np.concatenate(parts)
