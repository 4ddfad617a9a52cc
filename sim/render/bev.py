"""Top-down rasters: semantic BEV channels (ego heading up), colour plots and whole-map overviews."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from sim.geometry import PACIFICA, VehicleParameters, box_corners, ego_corners
from sim.map import RoadMap
from sim.render.map_paint import _ONE, SHIFT, _fill_each, _lines, map_paint, paint_ground, view_bbox
from sim.state import AgentSlice, AgentType

# --- semantic BEV -----------------------------------------------------------------------------

BEV_CHANNELS = ("drivable", "lanes", "route", "vehicles", "pedestrians", "static", "ego")
# Agent type -> BEV channel; cyclists count as vulnerable road users, with pedestrians.
_TYPE_CHANNEL = {
    AgentType.VEHICLE: "vehicles",
    AgentType.PEDESTRIAN: "pedestrians",
    AgentType.BICYCLE: "pedestrians",
    AgentType.TRAFFIC_CONE: "static",
    AgentType.BARRIER: "static",
    AgentType.CZONE_SIGN: "static",
    AgentType.GENERIC_OBJECT: "static",
}
_CHANNEL_OF_TYPE = np.array([BEV_CHANNELS.index(_TYPE_CHANNEL[t]) for t in AgentType], dtype=np.int64)

# Plot colours (RGB), painted in this order over a white background.
BEV_COLOURS = {
    "drivable": (214, 214, 214),
    "route": (188, 212, 246),
    "lanes": (150, 150, 150),
    "static": (236, 170, 40),
    "vehicles": (52, 104, 196),
    "pedestrians": (212, 50, 120),
    "ego": (222, 48, 48),
}


@dataclass(frozen=True)
class BEVConfig:
    """Geometry of the ego-centred BEV raster: ego heading points up, the ego's left is the image's left.

    The raster centre lies `ahead_m` metres ahead of the ego rear axle (default 0: the rear axle is at
    the centre, i.e. at pixel coordinate (width/2, height/2) where pixel i spans [i, i+1)); raise it
    to see more of the road ahead. Default 256 x 256 px at 0.25 m/px covers 64 m x 64 m.
    """

    width: int = 256
    height: int = 256
    resolution: float = 0.25  # metres per pixel
    ahead_m: float = 0.0

    def affine(self, ego_pose: np.ndarray) -> np.ndarray:
        """(2, 3) global metres -> pixel coordinates (pixel centres at integers, cv2's convention)."""
        x0, y0, h = (float(v) for v in ego_pose[:3])
        c, s, r = np.cos(h), np.sin(h), self.resolution
        col0 = self.width / 2 - 0.5
        row0 = self.height / 2 - 0.5 + self.ahead_m / r
        # col = col0 - lateral / r, row = row0 - forward / r, with (forward, lateral) the ego-frame point.
        return np.array([
            [s / r, -c / r, col0 - (s * x0 - c * y0) / r],
            [-c / r, -s / r, row0 + (c * x0 + s * y0) / r],
        ])


def bev_pixels(points: np.ndarray, ego_pose: np.ndarray, config: BEVConfig = BEVConfig()) -> np.ndarray:
    """(N, 2) (col, row) float pixel coordinates of global points (N, >=2) in the BEV raster."""
    a = config.affine(ego_pose)
    return np.asarray(points, dtype=np.float64)[:, :2] @ a[:, :2].T + a[:, 2]


def _agent_boxes(agents: AgentSlice | None, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Footprint corners (n, 4, 2) and types (n,) of valid agents within radius of centre."""
    if agents is None or len(agents.x) == 0:
        return np.zeros((0, 4, 2)), np.zeros(0, dtype=np.int64)
    size = np.hypot(agents.length, agents.width) / 2
    near = np.asarray(agents.valid, dtype=bool) & np.isfinite(agents.heading) \
        & (np.hypot(agents.x - centre[0], agents.y - centre[1]) < radius + size)  # NaN positions/sizes fail here
    corners = box_corners(agents.x[near], agents.y[near], agents.heading[near], agents.length[near], agents.width[near])
    return corners, np.asarray(agents.agent_type)[near].astype(np.int64)


def render_bev_channels(
    road_map: RoadMap,
    ego_pose: np.ndarray,
    agents: AgentSlice | None = None,
    route_lane_ids: Sequence[str] | None = None,
    config: BEVConfig = BEVConfig(),
    vehicle: VehicleParameters = PACIFICA,
) -> np.ndarray:
    """(len(BEV_CHANNELS), H, W) uint8 0/1 semantic raster around the ego (rear-axle pose (3,)).

    drivable: roadblocks, intersections, carparks and lanes (NAVSIM's drivable area); lanes: lane and
    connector centerlines (1 px); route: polygons of the route lanes; vehicles / pedestrians (and
    cyclists) / static: agent footprints; ego: the ego footprint.
    """
    paint = map_paint(road_map)
    out = np.zeros((len(BEV_CHANNELS), config.height, config.width), dtype=np.uint8)
    ch = {name: out[i] for i, name in enumerate(BEV_CHANNELS)}
    affine = config.affine(ego_pose)
    box = view_bbox(affine, config.width, config.height)
    _fill_each(ch["drivable"], paint.road, paint.road.select(box), affine, 1)
    _fill_each(ch["drivable"], paint.carparks, paint.carparks.select(box), affine, 1)
    _lines(ch["lanes"], paint.centerlines, paint.centerlines.select(box), affine, 1, 1, cv2.LINE_8)
    if route_lane_ids:
        route = np.array([road_map.lane_index[l] for l in route_lane_ids if l in road_map.lane_index], dtype=np.int64)
        route = route[np.isin(route, paint.lanes.select(box))]
        _fill_each(ch["route"], paint.lanes, route, affine, 1)
    radius = 0.5 * np.hypot(config.width, config.height) * config.resolution + abs(config.ahead_m)
    corners, types = _agent_boxes(agents, np.asarray(ego_pose[:2], dtype=np.float64), radius)
    if len(types):
        pix = np.rint((corners @ affine[:, :2].T + affine[:, 2]) * _ONE).astype(np.int32)
        for quad, channel in zip(pix, _CHANNEL_OF_TYPE[np.clip(types, 0, len(AgentType) - 1)].tolist()):
            cv2.fillConvexPoly(out[channel], quad, 1, cv2.LINE_8, SHIFT)
    ego = ego_corners(np.asarray(ego_pose, dtype=np.float64), vehicle) @ affine[:, :2].T + affine[:, 2]
    cv2.fillConvexPoly(ch["ego"], np.rint(ego * _ONE).astype(np.int32), 1, cv2.LINE_8, SHIFT)
    return out


def bev_to_rgb(channels: np.ndarray, names: Sequence[str] = BEV_CHANNELS) -> np.ndarray:
    """(H, W, 3) uint8 plot of BEV channels: white background, BEV_COLOURS painted in their order."""
    # A label image then one palette lookup: much faster than assigning colours through 3-channel masks.
    label = np.zeros(channels.shape[1:], dtype=np.uint8)
    palette = [(255, 255, 255)]
    for name, colour in BEV_COLOURS.items():
        if name in names:
            palette.append(colour)
            label[channels[names.index(name)] > 0] = len(palette) - 1
    lut = np.zeros((256, 1, 3), dtype=np.uint8)
    lut[: len(palette), 0] = palette
    return cv2.LUT(cv2.merge([label, label, label]), lut)


def draw_bev_polylines(
    rgb: np.ndarray,
    ego_pose: np.ndarray,
    polylines: Sequence[np.ndarray],
    colours: Sequence[tuple[int, int, int]],
    config: BEVConfig = BEVConfig(),
    thickness: int = 2,
    point_radius: int = 2,
) -> np.ndarray:
    """Draw global (N, >=2) poly-lines (e.g. planned / executed / logged trajectories) on a BEV RGB image.

    Draws in place and returns the image; `point_radius` > 0 also marks every point with a dot.
    """
    for line, colour in zip(polylines, colours):
        line = np.asarray(line, dtype=np.float64)
        if line.ndim != 2 or len(line) == 0 or not np.isfinite(line[:, :2]).all():
            continue
        pix = np.rint(bev_pixels(line, ego_pose, config) * _ONE).astype(np.int32)
        colour = tuple(int(c) for c in colour)
        if len(pix) > 1:
            cv2.polylines(rgb, [pix], False, colour, thickness, cv2.LINE_AA, SHIFT)
        if point_radius > 0:
            for p in pix:
                cv2.circle(rgb, (int(p[0]), int(p[1])), int(point_radius * _ONE), colour, -1, cv2.LINE_AA, SHIFT)
    return rgb


# --- whole-map overview -----------------------------------------------------------------------

AGENT_PLOT_COLOURS = np.array(
    [(52, 104, 196), (212, 50, 120), (40, 170, 190), (255, 128, 0), (240, 200, 40), (255, 150, 20), (150, 120, 100)],
    dtype=np.uint8,
)  # by AgentType code
EGO_PLOT_COLOUR = (222, 48, 48)
ROUTE_PLOT_COLOUR = np.array([70, 140, 255], dtype=np.float32)


def render_map_overview(
    road_map: RoadMap,
    agents: AgentSlice | None = None,
    ego_pose: np.ndarray | None = None,
    route_lane_ids: Sequence[str] | None = None,
    light_status: dict[str, int] | None = None,
    px_per_m: float = 4.0,
    max_side: int = 2048,
    margin_m: float = 10.0,
    vehicle: VehicleParameters = PACIFICA,
) -> np.ndarray:
    """(H, W, 3) uint8 north-up picture of the whole map (east right), with route, agents and ego.

    Same ground look as the camera texture. The scale is px_per_m, lowered so the longest side stays
    within max_side pixels (huge maps such as CARLA towns).
    """
    paint = map_paint(road_map)
    bounds = np.asarray(road_map.bounds if road_map.lanes or road_map.areas else [np.nan] * 4, dtype=np.float64)
    if not np.isfinite(bounds).all():
        centre = np.zeros(2) if ego_pose is None else np.asarray(ego_pose[:2], dtype=np.float64)
        bounds = np.concatenate([centre - 50.0, centre + 50.0])
    bounds = bounds + np.array([-margin_m, -margin_m, margin_m, margin_m])
    extent = np.maximum(bounds[2:] - bounds[:2], 1.0)
    scale = min(px_per_m, max_side / float(extent.max()))
    width, height = (int(v) for v in np.minimum(np.ceil(extent * scale), max_side))
    affine = np.array([[scale, 0.0, -bounds[0] * scale - 0.5], [0.0, -scale, bounds[3] * scale - 0.5]])
    img = np.empty((height, width, 3), dtype=np.uint8)
    paint_ground(img, paint, affine, 1.0 / scale, light_status)
    if route_lane_ids:
        mask = np.zeros((height, width), dtype=np.uint8)
        route = [road_map.lane_index[l] for l in route_lane_ids if l in road_map.lane_index]
        _fill_each(mask, paint.lanes, np.asarray(route, dtype=np.int64), affine, 1)
        sel = mask > 0
        img[sel] = (0.55 * img[sel] + 0.45 * ROUTE_PLOT_COLOUR).astype(np.uint8)
    corners, types = _agent_boxes(agents, np.zeros(2), np.inf)
    colours = AGENT_PLOT_COLOURS[np.clip(types, 0, len(AGENT_PLOT_COLOURS) - 1)].tolist()
    boxes = [(c, tuple(colour)) for c, colour in zip(corners, colours)]
    if ego_pose is not None:
        boxes.append((ego_corners(np.asarray(ego_pose, dtype=np.float64), vehicle), EGO_PLOT_COLOUR))
    for quad, colour in boxes:
        _draw_box(img, quad, affine, colour)
    return img


def _draw_box(img: np.ndarray, quad: np.ndarray, affine: np.ndarray, colour: tuple[int, int, int]) -> None:
    """A footprint with a dark outline and a line from its centre to its front (heading)."""
    pix = np.rint((quad @ affine[:, :2].T + affine[:, 2]) * _ONE).astype(np.int32)
    cv2.fillConvexPoly(img, pix, colour, cv2.LINE_AA, SHIFT)
    cv2.polylines(img, [pix], True, (20, 20, 20), 1, cv2.LINE_AA, SHIFT)
    centre, front = pix.mean(0).astype(np.int32), ((pix[0] + pix[3]) // 2)
    cv2.line(img, tuple(int(v) for v in centre), tuple(int(v) for v in front), (20, 20, 20), 1, cv2.LINE_AA, SHIFT)
