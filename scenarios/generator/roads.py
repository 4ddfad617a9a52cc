"""Road-building geometry: polylines (lines, arcs, Hermite curves), parallel offsets, and a RoadMap builder."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from sim.map import Area, Lane, RoadMap

LANE_WIDTH = 3.5
SIDEWALK_WIDTH = 2.5


def straight(start: np.ndarray, heading: float, length: float, spacing: float = 2.0) -> np.ndarray:
    """(K, 2) points of a straight segment."""
    n = max(int(np.ceil(length / spacing)), 1) + 1
    t = np.linspace(0.0, length, n)
    return np.asarray(start, dtype=np.float64) + t[:, None] * np.array([np.cos(heading), np.sin(heading)])


def arc(start: np.ndarray, heading: float, radius: float, sweep: float, spacing: float = 1.0) -> np.ndarray:
    """(K, 2) points of a circular arc from `start`; positive sweep turns left (CCW)."""
    n = max(int(np.ceil(abs(sweep) * radius / spacing)), 2) + 1
    side = np.sign(sweep)
    center = np.asarray(start) + side * radius * np.array([-np.sin(heading), np.cos(heading)])
    angles = heading - side * np.pi / 2 + np.linspace(0.0, sweep, n)
    return center + radius * np.stack([np.cos(angles), np.sin(angles)], -1)


def hermite(p0: np.ndarray, h0: float, p1: np.ndarray, h1: float, spacing: float = 1.0) -> np.ndarray:
    """(K, 2) cubic Hermite curve from pose (p0, h0) to (p1, h1); smooth lane connectors."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    chord = np.linalg.norm(p1 - p0)
    # Tangent scale from the turn angle keeps quarter turns close to circular arcs.
    turn = abs(np.angle(np.exp(1j * (h1 - h0))))
    scale = chord * (1.0 if turn < 1e-3 else min(1.3, (turn / 2) / np.sin(turn / 2) * 0.9))
    m0 = scale * np.array([np.cos(h0), np.sin(h0)])
    m1 = scale * np.array([np.cos(h1), np.sin(h1)])
    n = max(int(np.ceil(chord * 1.3 / spacing)), 2) + 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    h00, h10, h01, h11 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * p0 + h10 * m0 + h01 * p1 + h11 * m1


def join(*parts: np.ndarray) -> np.ndarray:
    """Concatenate polylines, dropping the duplicated joint points."""
    out = [parts[0]]
    for p in parts[1:]:
        out.append(p[1:] if np.allclose(out[-1][-1], p[0]) else p)
    return np.concatenate(out)


def headings(line: np.ndarray) -> np.ndarray:
    d = np.gradient(line, axis=0)
    return np.arctan2(d[:, 1], d[:, 0])


def offset(line: np.ndarray, distance: float) -> np.ndarray:
    """Parallel polyline, `distance` to the left (negative: right), along vertex normals."""
    h = headings(line)
    return line + distance * np.stack([-np.sin(h), np.cos(h)], -1)


def end_pose(line: np.ndarray) -> tuple[np.ndarray, float]:
    d = line[-1] - line[-2]
    return line[-1], float(np.arctan2(d[1], d[0]))


@dataclass
class RoadHandle:
    """Lane ids of one road: `forward[k]` runs along the reference line, k = 0 next to the centre;
    `backward[k]` runs against it. `reference` is the road's centre (divider) polyline."""

    name: str
    reference: np.ndarray
    forward: list[str]
    backward: list[str]


@dataclass
class MapBuilder:
    """Accumulates lanes, links and areas, then freezes them into a RoadMap."""

    name: str
    lanes: dict[str, dict] = field(default_factory=dict)
    areas: list[Area] = field(default_factory=list)

    def add_lane(self, lane_id: str, centerline: np.ndarray, speed_limit: float, lane_group: str,
                 width: float = LANE_WIDTH, is_connector: bool = False, traffic_light: str | None = None) -> str:
        self.lanes[lane_id] = dict(
            centerline=centerline, left=offset(centerline, width / 2), right=offset(centerline, -width / 2),
            speed_limit=speed_limit, lane_group=lane_group, succ=[], pred=[], is_connector=is_connector,
            traffic_light=traffic_light,
        )
        return lane_id

    def link(self, from_id: str, to_id: str) -> None:
        self.lanes[from_id]["succ"].append(to_id)
        self.lanes[to_id]["pred"].append(from_id)

    def add_road(self, name: str, reference: np.ndarray, n_forward: int, n_backward: int, speed_limit: float,
                 sidewalks: bool = True) -> RoadHandle:
        """Lanes either side of `reference` (right-hand traffic: forward lanes on its right), a
        roadblock polygon per direction, and sidewalks along the outer edges."""
        fwd, bwd = [], []
        for k in range(n_forward):
            fwd.append(self.add_lane(f"{name}_f{k}", offset(reference, -(k + 0.5) * LANE_WIDTH), speed_limit, f"{name}_f"))
        for k in range(n_backward):
            line = offset(reference, (k + 0.5) * LANE_WIDTH)[::-1]
            bwd.append(self.add_lane(f"{name}_b{k}", line, speed_limit, f"{name}_b"))
        for group, count, sign in ((f"{name}_f", n_forward, -1), (f"{name}_b", n_backward, 1)):
            if count:
                edge = offset(reference, sign * count * LANE_WIDTH)
                self.areas.append(Area(group, "roadblock", _strip(reference, edge)))
        if sidewalks:
            for side, count, sign in (("r", n_forward, -1), ("l", n_backward, 1)):
                inner = offset(reference, sign * count * LANE_WIDTH)
                outer = offset(reference, sign * (count * LANE_WIDTH + SIDEWALK_WIDTH))
                self.areas.append(Area(f"{name}_walk_{side}", "walkway", _strip(inner, outer)))
        return RoadHandle(name, reference, fwd, bwd)

    def connect(self, from_id: str, to_id: str, lane_group: str, traffic_light: str | None = None,
                speed_limit: float | None = None) -> str:
        """A connector lane (Hermite curve) from the end of one lane to the start of another."""
        a, b = self.lanes[from_id]["centerline"], self.lanes[to_id]["centerline"]
        p0, h0 = end_pose(a)
        h1 = float(np.arctan2(*(b[1] - b[0])[::-1]))
        if speed_limit is None:
            speed_limit = min(self.lanes[from_id]["speed_limit"], self.lanes[to_id]["speed_limit"])
        cid = self.add_lane(f"{from_id}__{to_id}", hermite(p0, h0, b[0], h1), speed_limit, lane_group,
                            is_connector=True, traffic_light=traffic_light)
        self.link(from_id, cid)
        self.link(cid, to_id)
        return cid

    def add_area(self, area_id: str, kind: str, polygon: shapely.Geometry) -> None:
        self.areas.append(Area(area_id, kind, polygon))

    def build(self) -> RoadMap:
        lanes = [
            Lane(id=i, centerline=d["centerline"], left_boundary=d["left"], right_boundary=d["right"],
                 speed_limit=d["speed_limit"], lane_group=d["lane_group"], successors=tuple(d["succ"]),
                 predecessors=tuple(d["pred"]), is_connector=d["is_connector"], traffic_light=d["traffic_light"])
            for i, d in self.lanes.items()
        ]
        return RoadMap(lanes, self.areas, name=self.name)


def _strip(a: np.ndarray, b: np.ndarray) -> shapely.Polygon:
    """Polygon between two roughly parallel polylines of equal vertex count."""
    poly = shapely.Polygon(np.concatenate([a, b[::-1]]))
    return poly if poly.is_valid else shapely.make_valid(poly).buffer(0)


def rectangle(center: np.ndarray, heading: float, length: float, width: float) -> shapely.Polygon:
    c, s = np.cos(heading), np.sin(heading)
    corners = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * [length / 2, width / 2]
    return shapely.Polygon(np.asarray(center) + corners @ np.array([[c, s], [-s, c]]))
