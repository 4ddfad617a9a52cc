"""Map paint: road-map geometry prepared once for drawing, and the top-down ground painting both renderers use."""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import shapely

from sim.map import RoadMap
from sim.state import TrafficLightStatus

SHIFT = 3  # sub-pixel bits of every cv2 drawing call (coordinates are multiplied by 2**SHIFT)
_ONE = float(1 << SHIFT)

# Ground colours (RGB), shared by the camera's ground texture and the map overview.
OFFROAD = (98, 112, 74)
SIDEWALK = (160, 156, 148)
ROAD = (72, 73, 77)
CARPARK = (86, 86, 90)
MARK_WHITE = (232, 232, 228)
MARK_YELLOW = (228, 184, 40)
STOP_COLOURS = ((236, 236, 232), (228, 184, 40), (220, 36, 32))  # by stop-line code: clear, yellow, red
MARK_WIDTH = 0.15  # m, painted line width
STOP_DEPTH = 0.5  # m, stop-line bar along the lane
DASH, GAP = 3.0, 6.0  # m, broken lane line pattern


# --- prepared map geometry -------------------------------------------------------------------


def _gather(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenated ranges [starts[k], stops[k]) without a Python loop."""
    lens = stops - starts
    ends = np.cumsum(lens)
    return np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lens - starts, lens)


@dataclass(frozen=True)
class PolyLayer:
    """Rings (polygon outlines or polylines) grouped into items; a polygon and its holes are one item.

    Stored flat so a view's items are culled by bounding box and transformed in one numpy call.
    """

    points: np.ndarray  # (P, 2) global
    ring_starts: np.ndarray  # (R + 1,) offsets into points
    item_starts: np.ndarray  # (I + 1,) offsets into rings
    bbox: np.ndarray  # (I, 4) xmin, ymin, xmax, ymax

    @classmethod
    def from_items(cls, items: Sequence[Sequence[np.ndarray]]) -> "PolyLayer":
        """Items given as lists of (K, 2) rings; every item needs at least one point."""
        rings = [np.asarray(r, dtype=np.float64).reshape(-1, 2) for item in items for r in item]
        points = np.concatenate(rings) if rings else np.zeros((0, 2))
        ring_starts = np.concatenate([[0], np.cumsum([len(r) for r in rings], dtype=np.int64)]).astype(np.int64)
        item_starts = np.concatenate([[0], np.cumsum([len(i) for i in items], dtype=np.int64)]).astype(np.int64)
        if items:
            first = ring_starts[item_starts[:-1]]
            bbox = np.concatenate([np.minimum.reduceat(points, first), np.maximum.reduceat(points, first)], axis=1)
        else:
            bbox = np.zeros((0, 4))
        return cls(points, ring_starts, item_starts, bbox)

    @classmethod
    def from_polygons(cls, geoms: Sequence[shapely.Geometry]) -> "PolyLayer":
        return cls.from_items(_polygon_items(geoms))

    def __len__(self) -> int:
        return len(self.bbox)

    def select(self, box: np.ndarray) -> np.ndarray:
        """Indices of the items whose bounding box meets box (xmin, ymin, xmax, ymax)."""
        b = self.bbox
        return np.flatnonzero((b[:, 0] <= box[2]) & (b[:, 2] >= box[0]) & (b[:, 1] <= box[3]) & (b[:, 3] >= box[1]))

    def pixels(self, items: np.ndarray, affine: np.ndarray) -> list[list[np.ndarray]]:
        """Rings of the given items in fixed-point pixel coordinates (int32, SHIFT bits), grouped by item."""
        items = np.asarray(items, dtype=np.int64)
        if items.size == 0:
            return []
        r0, r1 = self.item_starts[items], self.item_starts[items + 1]
        rings = _gather(r0, r1)
        p0, p1 = self.ring_starts[rings], self.ring_starts[rings + 1]
        pts = self.points[_gather(p0, p1)]
        pix = np.rint((pts @ affine[:, :2].T + affine[:, 2]) * _ONE).astype(np.int32)
        flat = np.split(pix, np.cumsum(p1 - p0)[:-1])
        bounds = np.concatenate([[0], np.cumsum(r1 - r0)])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class MapPaint:
    """A RoadMap turned into drawable layers once: areas, lane polygons, markings, stop lines, light heads."""

    walkways: PolyLayer
    carparks: PolyLayer
    road: PolyLayer  # roadblocks, intersections and lane polygons: the asphalt
    crosswalks: PolyLayer
    zebra: PolyLayer  # crosswalk bars
    lanes: PolyLayer  # item k = polygon of lane k
    centerlines: PolyLayer  # item k = centerline of lane k
    marks_white: PolyLayer  # solid white (right road edges)
    marks_yellow: PolyLayer  # solid yellow (between opposite directions, left road edges)
    marks_dashed: PolyLayer  # broken white dashes (between lanes of one direction)
    stop_lines: PolyLayer  # one quad per distinct stop line of a signalised junction entry
    stop_lights: tuple[tuple[str, ...], ...]  # light ids controlling each stop line
    heads: np.ndarray  # (n, 3) x, y, heading of traffic-light heads on the far side of junctions
    head_lights: tuple[str, ...]  # light id of each head


_PAINT_CACHE: dict[int, tuple[weakref.ref, MapPaint]] = {}


def map_paint(road_map: RoadMap) -> MapPaint:
    """The prepared paint of a map, built once per RoadMap object (cached while the map lives)."""
    key = id(road_map)
    hit = _PAINT_CACHE.get(key)
    if hit is not None and hit[0]() is road_map:
        return hit[1]
    paint = _prepare(road_map)
    _PAINT_CACHE[key] = (weakref.ref(road_map, lambda _ref, k=key: _PAINT_CACHE.pop(k, None)), paint)
    return paint


def _prepare(road_map: RoadMap) -> MapPaint:
    lanes = road_map.lanes
    lane_rings = [[np.concatenate([l.left_boundary, l.right_boundary[::-1]])] for l in lanes]
    kinds = ("roadblock", "intersection", "carpark", "crosswalk", "walkway")
    area = {k: list(road_map.area_layer(k)[1]) for k in kinds}
    road = PolyLayer.from_items(_polygon_items(area["roadblock"] + area["intersection"]) + lane_rings)
    white, yellow, dashed = _lane_markings(road_map)
    stop_quads, stop_lights, heads, head_lights = _stop_lines(road_map)
    return MapPaint(
        walkways=PolyLayer.from_polygons(area["walkway"]),
        carparks=PolyLayer.from_polygons(area["carpark"]),
        road=road,
        crosswalks=PolyLayer.from_polygons(area["crosswalk"]),
        zebra=PolyLayer.from_polygons(_zebra(area["crosswalk"])),
        lanes=PolyLayer.from_items(lane_rings),
        centerlines=PolyLayer.from_items([[l.centerline] for l in lanes]),
        marks_white=PolyLayer.from_items([[w] for w in white]),
        marks_yellow=PolyLayer.from_items([[y] for y in yellow]),
        marks_dashed=PolyLayer.from_items([[d] for d in dashed]),
        stop_lines=PolyLayer.from_items([[q] for q in stop_quads]),
        stop_lights=tuple(stop_lights),
        heads=heads,
        head_lights=tuple(head_lights),
    )


def _polygon_items(geoms: Sequence[shapely.Geometry]) -> list[list[np.ndarray]]:
    """One item per polygon part (multi-polygons exploded), holes kept as extra rings."""
    items = []
    for part in shapely.get_parts(np.asarray(list(geoms), dtype=object)) if len(geoms) else []:
        if isinstance(part, shapely.Polygon) and not part.is_empty:
            items.append([np.asarray(r.coords)[:-1, :2] for r in [part.exterior, *part.interiors]])
    return items


def _resample(line: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points, arc lengths and unit tangents of a polyline resampled every ~spacing metres."""
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))])
    n = max(int(np.ceil(s[-1] / spacing)), 1) + 1
    t = np.linspace(0.0, s[-1], n)
    pts = np.stack([np.interp(t, s, line[:, 0]), np.interp(t, s, line[:, 1])], -1)
    d = np.gradient(pts, axis=0)
    return pts, t, d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)


def _lane_markings(road_map: RoadMap, spacing: float = 1.0, probe: float = 0.6):
    """Classify every lane boundary piece by what lies just beyond it, and split it into marking lines.

    Probes 0.6 m outside each boundary find the neighbour lane (if any): same direction -> broken
    white (drawn from the left boundary only, so shared lines are painted once), opposite direction ->
    solid yellow, nothing -> road edge (yellow on a lane's left, white on its right, US style).
    Connector lanes (inside junctions) carry no markings.
    """
    sides = []  # (lane index, is_left, points, arc lengths, tangents)
    for i, lane in enumerate(road_map.lanes):
        if lane.is_connector:
            continue
        for is_left, line in ((True, lane.left_boundary), (False, lane.right_boundary)):
            sides.append((i, is_left, *_resample(np.asarray(line, dtype=np.float64), spacing)))
    if not sides:
        return [], [], []
    pts = np.concatenate([s[2] for s in sides])
    tang = np.concatenate([s[4] for s in sides])
    sign = np.concatenate([np.full(len(s[2]), 1.0 if s[1] else -1.0) for s in sides])
    owner = np.concatenate([np.full(len(s[2]), s[0]) for s in sides])
    probes = pts + probe * sign[:, None] * np.stack([-tang[:, 1], tang[:, 0]], -1)
    p_idx, l_idx = road_map.lanes_at(probes)
    connector = np.array([l.is_connector for l in road_map.lanes], dtype=bool)
    keep = (l_idx != owner[p_idx]) & ~connector[l_idx]
    p_idx, l_idx = p_idx[keep], l_idx[keep]
    same = np.zeros(len(pts), dtype=bool)
    opposite = np.zeros(len(pts), dtype=bool)
    if p_idx.size:
        nb_heading = road_map.heading_at(l_idx, road_map.project(l_idx, probes[p_idx]))
        cos = np.cos(nb_heading) * tang[p_idx, 0] + np.sin(nb_heading) * tang[p_idx, 1]
        same[p_idx[cos > 0.5]] = True
        opposite[p_idx[cos < -0.5]] = True
    # 0 white solid, 1 yellow solid, 2 dashed, -1 nothing (shared line painted from the other lane).
    edge = np.where(sign > 0, 1, 0)
    code = np.where(opposite, 1, np.where(same, np.where(sign > 0, 2, -1), edge))
    white, yellow, dashed = [], [], []
    start = 0
    for _, _, p, s, _ in sides:
        c = code[start : start + len(p)]
        start += len(p)
        for a, b in _runs(c):
            if c[a] < 0:
                continue
            piece_s = s[a : min(b + 1, len(p))]  # overlap one sample so runs join
            piece = p[a : min(b + 1, len(p))]
            if len(piece) < 2:
                continue
            if c[a] == 2:
                dashed.extend(_dashes(piece, piece_s))
            else:
                (yellow if c[a] == 1 else white).append(piece)
    return white, yellow, dashed


def _runs(codes: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of runs of equal values."""
    cuts = np.flatnonzero(np.diff(codes)) + 1
    bounds = np.concatenate([[0], cuts, [len(codes)]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _dashes(pts: np.ndarray, s: np.ndarray) -> list[np.ndarray]:
    """Broken-line dashes of a polyline; the dash phase is the lane's own arc length, so it is stable."""
    out = []
    k0, k1 = int(np.floor(s[0] / (DASH + GAP))), int(np.ceil(s[-1] / (DASH + GAP)))
    for k in range(k0, k1 + 1):
        a, b = max(k * (DASH + GAP), s[0]), min(k * (DASH + GAP) + DASH, s[-1])
        if b - a < 0.3:
            continue
        inner = (s > a) & (s < b)
        t = np.concatenate([[a], s[inner], [b]])
        out.append(np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], -1))
    return out


def _zebra(crosswalks: list[shapely.Geometry], period: float = 1.2, bar: float = 0.6) -> list[shapely.Geometry]:
    """Zebra bars: strips parallel to the traffic (the crosswalk's short axis), stepped along its long axis."""
    out: list[shapely.Geometry] = []
    for poly in crosswalks:
        rect = shapely.minimum_rotated_rectangle(poly)
        if not isinstance(rect, shapely.Polygon):
            continue
        c = np.asarray(rect.exterior.coords)[:4]
        e1, e2 = c[1] - c[0], c[3] - c[0]
        along, across = (e1, e2) if np.linalg.norm(e1) >= np.linalg.norm(e2) else (e2, e1)
        length = np.linalg.norm(along)
        n = int((length + period - bar) // period)
        if n < 1:
            continue
        u = along / length
        first = (length - (n * period - (period - bar))) / 2
        t0 = first + period * np.arange(n)
        quads = np.stack([c[0] + u * t0[:, None], c[0] + u * (t0 + bar)[:, None]], 1)
        quads = np.concatenate([quads, quads[:, ::-1] + across], 1)
        bars = shapely.intersection(shapely.polygons(quads), poly)
        out.extend(g for g in shapely.get_parts(bars) if isinstance(g, shapely.Polygon) and g.area > 0.01)
    return out


def _stop_lines(road_map: RoadMap):
    """Stop-line quads where signalised connectors begin (one per incoming lane), and far-side light heads.

    A head per (stop line, light) is placed across the junction, as far ahead as the straightest
    connector reaches, so it stays in view while the ego waits at the line.
    """
    feeders: dict[str, list[str]] = {}  # predecessors, from either side of the links
    for lane in road_map.lanes:
        for nxt in lane.successors:
            feeders.setdefault(nxt, []).append(lane.id)
        feeders.setdefault(lane.id, []).extend(p for p in lane.predecessors if p not in feeders.get(lane.id, ()))
    groups: dict[object, dict] = {}
    for lane in road_map.lanes:
        if lane.traffic_light is None:
            continue
        incoming = [road_map.lane(p) for p in feeders.get(lane.id, ()) if not road_map.lane(p).is_connector]
        if incoming:  # the stop line closes the incoming lane, whatever angle the connectors leave at
            src = incoming[0]
            key: object = src.id
            left, right, line = src.left_boundary[-1], src.right_boundary[-1], src.centerline[-2:]
        else:
            left, right, line = lane.left_boundary[0], lane.right_boundary[0], lane.centerline[:2]
            key = tuple(np.round(np.concatenate([left, right]) / 0.2).astype(int).tolist())
        d = (line[1] - line[0]) / max(np.linalg.norm(line[1] - line[0]), 1e-9)
        g = groups.setdefault(key, {"left": np.asarray(left, float), "right": np.asarray(right, float), "dir": d,
                                    "lights": [], "reach": 0.0})
        if lane.traffic_light not in g["lights"]:
            g["lights"].append(lane.traffic_light)
        mid = (g["left"] + g["right"]) / 2
        g["reach"] = max(g["reach"], float(np.dot(lane.centerline[-1] - mid, g["dir"])))
    quads, lights, heads, head_lights = [], [], [], []
    for g in groups.values():
        left, right, d = g["left"], g["right"], g["dir"]
        quads.append(np.stack([left, right, right - STOP_DEPTH * d, left - STOP_DEPTH * d]))
        lights.append(tuple(g["lights"]))
        lateral = (left - right) / max(np.linalg.norm(left - right), 1e-9)
        far = (left + right) / 2 + np.clip(g["reach"], 8.0, 40.0) * d
        n = len(g["lights"])
        for k, light in enumerate(g["lights"]):
            p = far + (k - (n - 1) / 2) * 0.6 * lateral
            heads.append((p[0], p[1], np.arctan2(d[1], d[0])))
            head_lights.append(light)
    return quads, lights, np.asarray(heads, dtype=np.float64).reshape(-1, 3), head_lights


# --- painting ---------------------------------------------------------------------------------


def view_bbox(affine: np.ndarray, width: int, height: int, margin: float = 1.0) -> np.ndarray:
    """Global (xmin, ymin, xmax, ymax) seen by a width x height image under a global->pixel affine."""
    full = np.vstack([affine, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    corners = np.array([[-1, -1], [width, -1], [width, height], [-1, height]], dtype=np.float64)
    g = corners @ inv[:, :2].T + inv[:, 2]
    return np.concatenate([g.min(0) - margin, g.max(0) + margin])


def _fill_each(img: np.ndarray, layer: PolyLayer, items: np.ndarray, affine: np.ndarray, colour) -> None:
    """Fill items one call each: one cv2.fillPoly call with overlapping polygons would XOR them."""
    for rings in layer.pixels(items, affine):
        cv2.fillPoly(img, rings, colour, cv2.LINE_8, SHIFT)


def _fill_disjoint(img: np.ndarray, layer: PolyLayer, items: np.ndarray, affine: np.ndarray, colour) -> None:
    rings = [r for item in layer.pixels(items, affine) for r in item]
    if rings:
        cv2.fillPoly(img, rings, colour, cv2.LINE_8, SHIFT)


def _lines(img: np.ndarray, layer: PolyLayer, items: np.ndarray, affine: np.ndarray, colour, thickness: int,
           line_type: int = cv2.LINE_AA) -> None:
    rings = [r for item in layer.pixels(items, affine) for r in item]
    if rings:
        cv2.polylines(img, rings, False, colour, thickness, line_type, SHIFT)


def stop_line_codes(paint: MapPaint, items: np.ndarray, light_status: dict[str, int] | None) -> tuple[int, ...]:
    """Paint code per stop line: 2 red when all its lights are red, 1 yellow when any is yellow and
    none green, else 0 (white; also when light_status is None or the lights are unknown)."""
    if not light_status:
        return (0,) * len(items)
    codes = []
    for i in items.tolist():
        states = [light_status.get(l, TrafficLightStatus.UNKNOWN) for l in paint.stop_lights[i]]
        if all(s == TrafficLightStatus.RED for s in states):
            codes.append(2)
        elif TrafficLightStatus.YELLOW in states and TrafficLightStatus.GREEN not in states:
            codes.append(1)
        else:
            codes.append(0)
    return tuple(codes)


def paint_stop_lines(img: np.ndarray, paint: MapPaint, items: np.ndarray, affine: np.ndarray,
                     codes: Sequence[int]) -> None:
    """(Re)draw stop lines in a fixed order, hard-edged, so a repaint equals a fresh paint."""
    for rings, code in zip(paint.stop_lines.pixels(items, affine), codes):
        cv2.fillPoly(img, rings, STOP_COLOURS[code], cv2.LINE_8, SHIFT)


def paint_ground(img: np.ndarray, paint: MapPaint, affine: np.ndarray, resolution: float,
                 light_status: dict[str, int] | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """Paint the map's ground (off-road, sidewalks, asphalt, zebras, markings, stop lines) in place.

    `affine` (2, 3) maps global metres to pixel coordinates; `resolution` is metres per pixel (sets
    line widths). Returns the stop-line items drawn and their codes, for later repaints.
    """
    box = view_bbox(affine, img.shape[1], img.shape[0])
    cv2.rectangle(img, (0, 0), (img.shape[1], img.shape[0]), OFFROAD, -1)  # 40x faster than img[:] = colour
    _fill_each(img, paint.walkways, paint.walkways.select(box), affine, SIDEWALK)
    _fill_each(img, paint.carparks, paint.carparks.select(box), affine, CARPARK)
    _fill_each(img, paint.road, paint.road.select(box), affine, ROAD)
    _fill_each(img, paint.crosswalks, paint.crosswalks.select(box), affine, ROAD)
    _fill_disjoint(img, paint.zebra, paint.zebra.select(box), affine, MARK_WHITE)
    thick = max(1, int(round(MARK_WIDTH / resolution)))
    _lines(img, paint.marks_white, paint.marks_white.select(box), affine, MARK_WHITE, thick)
    _lines(img, paint.marks_dashed, paint.marks_dashed.select(box), affine, MARK_WHITE, thick)
    _lines(img, paint.marks_yellow, paint.marks_yellow.select(box), affine, MARK_YELLOW, thick)
    stops = paint.stop_lines.select(box)
    codes = stop_line_codes(paint, stops, light_status)
    paint_stop_lines(img, paint, stops, affine, codes)
    return stops, codes
