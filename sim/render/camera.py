"""Deterministic pinhole camera: ground warped from cached top-down map textures, agents as shaded 3-D boxes."""
from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass, replace

import cv2
import numpy as np

from sim.geometry import box_corners, principal_value
from sim.map import RoadMap
from sim.render.map_paint import SHIFT, MapPaint, map_paint, paint_ground, paint_stop_lines, stop_line_codes
from sim.state import AgentSlice, AgentType, TrafficLightStatus

# NAVSIM / nuPlan CAM_F0: 1920 x 1080, fx = fy ~ 1545 px, principal point ~ (960, 560).
CAM_F0_WIDTH = 1920
CAM_F0_HEIGHT = 1080
CAM_F0_FOCAL = 1545.0
SIDE_CAMERA_YAW = np.deg2rad(55.0)
SNAP_M_DECIMALS = 6  # world positions are drawn rounded to 1 um
SNAP_RAD_DECIMALS = 9  # and headings to 1 nrad

_ONE = float(1 << SHIFT)

# Look (RGB). The haze colour is also the bottom of the sky, so the far ground melts into the horizon.
SKY_TOP = np.array([78, 128, 196], dtype=np.float64)
SKY_HORIZON = np.array([196, 212, 228], dtype=np.float64)
HAZE = np.array([184, 194, 204], dtype=np.float64)
SUN = np.array([np.cos(2.4) * np.cos(0.9), np.sin(2.4) * np.cos(0.9), np.sin(0.9)])  # fixed in the world
# Per AgentType code: vehicle, pedestrian, bicycle, cone, barrier, construction sign, generic object.
TYPE_COLOURS = np.array(
    [(150, 150, 156), (232, 84, 150), (40, 176, 200), (255, 118, 0), (236, 190, 30), (255, 140, 0), (140, 110, 86)],
    dtype=np.float64,
)
DEFAULT_HEIGHTS = np.array([1.6, 1.75, 1.7, 0.7, 1.0, 1.2, 1.0])
# Vehicles get a colour from this palette by a hash of their track id: stable from frame to frame.
VEHICLE_PALETTE = np.array(
    [(178, 34, 34), (40, 72, 160), (214, 214, 210), (38, 38, 42), (128, 130, 136), (24, 96, 56), (196, 150, 40),
     (92, 40, 110), (170, 176, 184), (120, 64, 36)],
    dtype=np.float64,
)
LIGHT_COLOURS = {
    TrafficLightStatus.GREEN: (40, 214, 84), TrafficLightStatus.YELLOW: (244, 196, 24),
    TrafficLightStatus.RED: (236, 28, 28), TrafficLightStatus.UNKNOWN: (44, 44, 44),
}
HEAD_SIZE = (0.3, 0.45, 4.6, 5.6)  # length, width, bottom, top (m) of a traffic-light head
HEAD_HOUSING = (48, 48, 52)
_LIT_FACE = 3  # a head's heading is its lane's: the back face looks at the approaching traffic

# Box faces over corners 0-3 (bottom FL, RL, RR, FR) and 4-7 (top, same order).
_FACES = np.array([[4, 5, 6, 7], [0, 1, 2, 3], [0, 3, 7, 4], [1, 2, 6, 5], [0, 1, 5, 4], [2, 3, 7, 6]])


@dataclass(frozen=True)
class CameraConfig:
    """A pinhole camera on the ego, posed relative to its rear axle.

    Intrinsics follow CAM_F0 with its horizontal field of view (~63.7 deg) kept at any width:
    fx = fy = 1545 * width / 1920 (square pixels), principal point at the image centre. Any height
    other than width * 1080 / 1920 is a vertical crop (256 x 128 sees +-17.3 deg vertically instead of
    CAM_F0's +-19.3) or an extension of CAM_F0's view; with pitch 0 the horizon is the middle row.
    yaw turns the camera left (CCW); `CameraConfig.side(left=True)` gives a +-55 deg side camera.
    """

    width: int = 256
    height: int = 128
    mount_x: float = 1.5  # m ahead of the rear axle
    mount_y: float = 0.0  # m to the left
    mount_z: float = 1.6  # m above the ground
    yaw: float = 0.0  # rad, CCW from the ego heading
    pitch: float = 0.0  # rad, positive looks down
    max_distance: float = 80.0  # m, boxes farther away are not drawn
    near: float = 0.1  # m, near clipping plane

    @classmethod
    def side(cls, left: bool, **kwargs) -> "CameraConfig":
        return cls(yaw=SIDE_CAMERA_YAW if left else -SIDE_CAMERA_YAW, **kwargs)

    @property
    def focal(self) -> float:
        return CAM_F0_FOCAL * self.width / CAM_F0_WIDTH

    @property
    def intrinsics(self) -> np.ndarray:
        f = self.focal
        return np.array([[f, 0.0, self.width / 2], [0.0, f, self.height / 2], [0.0, 0.0, 1.0]])

    @property
    def horizontal_fov(self) -> float:
        return 2.0 * np.arctan(self.width / 2 / self.focal)


def camera_pose(config: CameraConfig, ego_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera centre C (3,) in global metres, rotation R (3, 3) global -> camera (x right, y down,
    z forward, OpenCV's convention) and camera yaw (rad) for a rear-axle pose (3,)."""
    x, y, h = (float(v) for v in ego_pose[:3])
    c, s = np.cos(h), np.sin(h)
    centre = np.array([x + c * config.mount_x - s * config.mount_y, y + s * config.mount_x + c * config.mount_y,
                       config.mount_z])
    yaw = h + config.yaw
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(config.pitch), np.sin(config.pitch)
    rot = np.array([
        [sy, -cy, 0.0],  # right
        [-cy * sp, -sy * sp, -cp],  # down
        [cy * cp, sy * cp, -sp],  # forward
    ])
    return centre, rot, yaw


def _haze(depth: np.ndarray) -> np.ndarray:
    """Haze fraction by forward distance: clear to 30 m, then exponential, total beyond the textures."""
    depth = np.asarray(depth, dtype=np.float64)
    a = 1.0 - np.exp(-np.maximum(depth - 30.0, 0.0) / 60.0)
    t = np.clip((depth - 110.0) / 60.0, 0.0, 1.0)
    return np.maximum(a, t * t * (3.0 - 2.0 * t))


# --- ground textures --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Level:
    """One ground texture level: a square top-down image centred `lookahead` m ahead of the camera.

    Centres snap to a `grid` (a whole number of pixels), so the texture, and hence every frame, is a
    pure function of the pose; rasterisation is translation invariant on that grid.
    """

    resolution: float  # m per pixel
    size: int  # pixels per side
    lookahead: float  # m
    grid: float  # m
    max_depth: float  # m, rows up to this forward distance sample this level


# Fine texture near the camera, coarse beyond (a two-level mip map: less aliasing, small rebuilds).
_LEVELS = (_Level(0.08, 800, 18.0, 8.0, 25.0), _Level(0.25, 1024, 70.0, 16.0, np.inf))


@dataclass
class _Texture:
    image: np.ndarray  # (n, n, 3) RGB, north up
    affine: np.ndarray  # (2, 3) global -> pixel
    to_global: np.ndarray  # (3, 3) pixel -> global ground point (x, y, 1)
    stops: np.ndarray  # stop-line items inside, and the codes they are painted with
    codes: tuple[int, ...]


class _TextureCache:
    """Top-down RGB ground textures of one level keyed by their snapped centre (small LRU)."""

    def __init__(self, paint: MapPaint, level: _Level, capacity: int = 3):
        self.paint, self.level, self.capacity = paint, level, capacity
        self._items: OrderedDict[tuple[int, int], _Texture] = OrderedDict()

    def get(self, point: np.ndarray, light_status: dict[str, int] | None) -> _Texture:
        key = tuple(int(v) for v in np.round(point / self.level.grid))
        tex = self._items.get(key)
        if tex is None:
            tex = self._build(np.array(key, dtype=np.float64) * self.level.grid, light_status)
            self._items[key] = tex
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
            codes = stop_line_codes(self.paint, tex.stops, light_status)
            if codes != tex.codes:  # a light changed: repaint only the stop lines
                paint_stop_lines(tex.image, self.paint, tex.stops, tex.affine, codes)
                tex.codes = codes
        return tex

    def _build(self, centre: np.ndarray, light_status: dict[str, int] | None) -> _Texture:
        res, n = self.level.resolution, self.level.size
        ox, oy = centre[0] - n / 2 * res, centre[1] + n / 2 * res  # global position of pixel (0, 0)
        affine = np.array([[1 / res, 0.0, -ox / res], [0.0, -1 / res, oy / res]])
        image = np.empty((n, n, 3), dtype=np.uint8)
        stops, codes = paint_ground(image, self.paint, affine, res, light_status)
        to_global = np.array([[res, 0.0, ox], [0.0, -res, oy], [0.0, 0.0, 1.0]])
        return _Texture(image, affine, to_global, stops, codes)


def _finite(agents: AgentSlice) -> np.ndarray:
    """Agents whose pose and size are finite (a NaN would turn into garbage pixel coordinates)."""
    return np.isfinite(agents.x) & np.isfinite(agents.y) & np.isfinite(agents.heading) \
        & np.isfinite(agents.length) & np.isfinite(agents.width)


# --- the camera -------------------------------------------------------------------------------


def _snap_heading(heading: np.ndarray) -> np.ndarray:
    """Headings on a 1 nrad grid in [-pi, pi): pi and -pi (one direction, two floats) snap to the same value."""
    half_turn = np.round(np.pi, SNAP_RAD_DECIMALS)
    snapped = np.round(principal_value(np.asarray(heading, dtype=np.float64)), SNAP_RAD_DECIMALS)
    return np.where(snapped >= half_turn, -half_turn, snapped)


class CameraRenderer:
    """Renders (H, W, 3) uint8 RGB frames of a RoadMap and its agents from the ego's camera.

    Ground: top-down textures of the map (asphalt, sidewalks, markings, zebras, stop lines coloured by
    their lights) are warped into the image with one homography per texture level; rows above the
    horizon are sky and the ground fades into haze with distance. Agents (and traffic-light heads when
    light states are given) are shaded 3-D boxes drawn far to near, clipped at the near plane.
    Deterministic: the same inputs give the same frame whatever was rendered before.
    """

    def __init__(self, road_map: RoadMap, config: CameraConfig = CameraConfig()):
        self.config = config
        self.paint = map_paint(road_map)
        self._caches = [_TextureCache(self.paint, level) for level in _LEVELS]
        self._colour_ids: dict[str, int] = {}
        self._setup_rows()

    def _setup_rows(self) -> None:
        """Per-row ground depth (no roll: the depth of a ground pixel depends on its row only)."""
        cfg, f = self.config, self.config.focal
        t = (np.arange(cfg.height) - cfg.height / 2) / f
        cp, sp = np.cos(cfg.pitch), np.sin(cfg.pitch)
        down, forward = cp * t + sp, cp - sp * t
        ground = down > 1e-3
        depth = np.where(ground, cfg.mount_z * forward / np.where(ground, down, 1.0), np.inf)
        self._ground_top = top = int(np.argmax(ground)) if ground.any() else cfg.height
        self._level_rows = []  # contiguous row range per level: ground depth falls row by row
        lower = 0.0
        for level in _LEVELS:
            rows = np.flatnonzero(ground & (depth > lower) & (depth <= level.max_depth))
            self._level_rows.append((int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0))
            lower = level.max_depth
        a = _haze(depth[top:])[:, None, None]
        self._keep = np.rint(256 * (1 - a)).astype(np.uint16)
        self._add = np.rint(256 * a * HAZE).astype(np.uint16) + 128  # +128: round on the >> 8
        sky_t = np.clip(np.arange(cfg.height) / max(self._ground_top, 1), 0.0, 1.0)[:, None] ** 0.7
        sky = SKY_TOP * (1 - sky_t) + SKY_HORIZON * sky_t
        self._background = np.repeat(np.rint(sky).astype(np.uint8)[:, None, :], cfg.width, axis=1)

    def render(self, ego_pose: np.ndarray, agents: AgentSlice | None = None,
               light_status: dict[str, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB frame for an ego rear-axle global pose (3,), agents at that time
        (AgentSlice, or None) and traffic-light states by light id (None: lights not shown)."""
        cfg = self.config
        ego_pose = np.asarray(ego_pose, dtype=np.float64)
        if ego_pose.shape[-1] < 3 or not np.isfinite(ego_pose[:3]).all():
            raise ValueError(f"camera: ego pose must be a finite (3,) rear-axle pose, got {ego_pose[:3]}")
        # Snapped to 1 um / 1 nrad: a pixel edge must not hang on the last bits of a float (the same scene read
        # back from a file, or computed in another order, then renders the same image).
        ego_pose = np.concatenate([np.round(ego_pose[:2], SNAP_M_DECIMALS), _snap_heading(ego_pose[2:3])])
        if agents is not None:
            agents = replace(agents, x=np.round(agents.x, SNAP_M_DECIMALS), y=np.round(agents.y, SNAP_M_DECIMALS),
                             heading=_snap_heading(agents.heading))
        centre, rot, yaw = camera_pose(cfg, ego_pose)
        img = self._background.copy()
        if self._ground_top < cfg.height:
            self._draw_ground(img, centre, rot, yaw, light_status)
        boxes = self._boxes(agents, light_status)
        if boxes is not None:
            self._draw_boxes(img, centre, rot, yaw, boxes)
        return img

    def project(self, ego_pose: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and camera depth (N,) of global points (N, 3) (z up, metres); pixels
        of points with depth <= near are meaningless."""
        centre, rot, _ = camera_pose(self.config, np.asarray(ego_pose, dtype=np.float64))
        cam = (np.asarray(points, dtype=np.float64) - centre) @ rot.T
        z = cam[:, 2]
        k = self.config.intrinsics
        safe = np.where(z > self.config.near, z, self.config.near)
        uv = np.stack([k[0, 0] * cam[:, 0] / safe + k[0, 2], k[1, 1] * cam[:, 1] / safe + k[1, 2]], -1)
        return uv, z

    # --- ground ---

    def _draw_ground(self, img: np.ndarray, centre: np.ndarray, rot: np.ndarray, yaw: float,
                     light_status: dict[str, int] | None) -> None:
        cfg, k = self.config, self.config.intrinsics
        direction = np.array([np.cos(yaw), np.sin(yaw)])
        for cache, (r0, r1) in zip(self._caches, self._level_rows):
            if r1 <= r0:
                continue
            tex = cache.get(centre[:2] + cache.level.lookahead * direction, light_status)
            # Texture pixel -> global ground point (z = 0) -> camera -> image; offsets first, for precision.
            g = tex.to_global
            m = np.column_stack([rot[:, :2] @ g[:2, 0], rot[:, :2] @ g[:2, 1],
                                 rot @ np.array([g[0, 2] - centre[0], g[1, 2] - centre[1], -centre[2]])])
            hom = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -r0], [0.0, 0.0, 1.0]]) @ k @ m
            cv2.warpPerspective(tex.image, hom, (cfg.width, r1 - r0), dst=img[r0:r1], flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in HAZE))
        ground = img[self._ground_top:]
        ground[:] = ((ground * self._keep + self._add) >> 8).astype(np.uint8)

    # --- boxes ---

    def _boxes(self, agents: AgentSlice | None, light_status: dict[str, int] | None):
        """Box arrays (x, y, heading, length, width, bottom, top, colour (n, 3), lit colour (n, 3), is_head)
        or None; a head's face towards its approaching traffic shows the light's colour, unshaded."""
        parts = []
        if agents is not None and len(agents.x):
            valid = np.flatnonzero(np.asarray(agents.valid, dtype=bool) & _finite(agents))
            types = np.clip(np.asarray(agents.agent_type)[valid].astype(np.int64), 0, len(TYPE_COLOURS) - 1)
            height = np.asarray(agents.height, dtype=np.float64)[valid]
            height = np.where(height > 0.05, height, DEFAULT_HEIGHTS[types])
            colour = TYPE_COLOURS[types].copy()
            for j in np.flatnonzero(types == AgentType.VEHICLE).tolist():
                colour[j] = VEHICLE_PALETTE[self._vehicle_colour(agents.track_ids, int(valid[j]))]
            n = len(valid)
            parts.append((agents.x[valid], agents.y[valid], agents.heading[valid], agents.length[valid],
                          agents.width[valid], np.zeros(n), height, colour, colour, np.zeros(n, dtype=bool)))
        heads = self.paint.heads
        if light_status and len(heads):
            shown = [i for i, l in enumerate(self.paint.head_lights) if l in light_status]
            if shown:
                n = len(shown)
                lit = np.array([LIGHT_COLOURS.get(light_status[self.paint.head_lights[i]],
                                                  LIGHT_COLOURS[TrafficLightStatus.UNKNOWN]) for i in shown],
                               dtype=np.float64)
                hl, hw, hz0, hz1 = HEAD_SIZE
                parts.append((heads[shown, 0], heads[shown, 1], heads[shown, 2], np.full(n, hl), np.full(n, hw),
                              np.full(n, hz0), np.full(n, hz1), np.tile(HEAD_HOUSING, (n, 1)), lit,
                              np.ones(n, dtype=bool)))
        if not parts:
            return None
        return [np.concatenate([p[i] for p in parts]).astype(np.float64 if i < 9 else bool) for i in range(10)]

    def _vehicle_colour(self, track_ids: list[str], index: int) -> int:
        tid = track_ids[index] if index < len(track_ids) else str(index)
        colour = self._colour_ids.get(tid)
        if colour is None:
            if len(self._colour_ids) > 100_000:
                self._colour_ids.clear()
            colour = self._colour_ids[tid] = zlib.crc32(tid.encode()) % len(VEHICLE_PALETTE)
        return colour

    def _draw_boxes(self, img: np.ndarray, centre: np.ndarray, rot: np.ndarray, yaw: float, boxes) -> None:
        cfg = self.config
        x, y, heading, length, width, z0, z1, colour, lit, is_head = boxes
        dx, dy = x - centre[0], y - centre[1]
        cy, sy = np.cos(yaw), np.sin(yaw)
        fwd, lat = cy * dx + sy * dy, -sy * dx + cy * dy
        radius = 0.5 * np.hypot(length, width)
        half = 0.5 * cfg.horizontal_fov
        # Cull: in range, not wholly behind the near plane, and touching the horizontal field of view.
        keep = (fwd * fwd + lat * lat < cfg.max_distance ** 2) & (fwd + radius > cfg.near) \
            & (np.abs(lat) * np.cos(half) - fwd * np.sin(half) < radius)
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return
        idx = idx[np.argsort(-(fwd[idx] ** 2 + lat[idx] ** 2), kind="stable")]  # painter: far to near
        x, y, heading, length, width, z0, z1 = (a[idx] for a in (x, y, heading, length, width, z0, z1))
        foot = box_corners(x, y, heading, length, width)  # (n, 4, 2)
        n = len(idx)
        world = np.concatenate([
            np.concatenate([foot, np.broadcast_to(z0[:, None, None], (n, 4, 1))], -1),
            np.concatenate([foot, np.broadcast_to(z1[:, None, None], (n, 4, 1))], -1),
        ], 1)
        cam = (world - centre) @ rot.T  # (n, 8, 3)
        # Back-face culling with the camera in each box's frame; a camera inside a box sees no face.
        ch, sh = np.cos(heading), np.sin(heading)
        lx = ch * (centre[0] - x) + sh * (centre[1] - y)
        ly = -sh * (centre[0] - x) + ch * (centre[1] - y)
        visible = np.stack([centre[2] > z1, centre[2] < z0, lx > length / 2, lx < -length / 2,
                            ly > width / 2, ly < -width / 2], 1)
        colours = self._face_colours(colour[idx], lit[idx], is_head[idx], ch, sh, fwd[idx])
        k = cfg.intrinsics
        z = cam[..., 2]
        safe = np.maximum(z, cfg.near)
        pix = np.stack([k[0, 0] * cam[..., 0] / safe + k[0, 2], k[1, 1] * cam[..., 1] / safe + k[1, 2]], -1)
        faces = np.ascontiguousarray(np.rint(pix * _ONE).astype(np.int32)[:, _FACES])  # (n, 6, 4, 2)
        in_front = (z > cfg.near).all(1).tolist()
        for i, (vis, cols, whole) in enumerate(zip(visible.tolist(), colours, in_front)):
            polys = []
            for f in range(6):
                if not vis[f]:
                    continue
                poly = faces[i, f] if whole else self._clipped(cam[i, _FACES[f]])
                if poly is None:
                    continue
                cv2.fillPoly(img, [poly], cols[f], cv2.LINE_AA, SHIFT)
                polys.append(poly)
            if polys:  # dark edges keep neighbouring boxes of one colour apart
                cv2.polylines(img, polys, True, cols[6], 1, cv2.LINE_AA, SHIFT)

    def _face_colours(self, base: np.ndarray, lit: np.ndarray, is_head: np.ndarray, ch: np.ndarray, sh: np.ndarray,
                      depth: np.ndarray) -> list[list[tuple]]:
        """Per box: 6 face colours (top, bottom, front, back, left, right) and an edge colour, hazed."""
        front = np.clip(ch * SUN[0] + sh * SUN[1], -1, 1)
        left = np.clip(-sh * SUN[0] + ch * SUN[1], -1, 1)
        side = lambda d: 0.42 + 0.4 * np.maximum(d, 0.0)  # noqa: E731 - Lambert shading of a wall
        shade = np.stack([np.ones_like(ch), np.full_like(ch, 0.35), side(front), side(-front), side(left),
                          side(-left), np.full_like(ch, 0.3)], 1)
        rgb = base[:, None, :] * shade[:, :, None]
        rgb[is_head, _LIT_FACE] = lit[is_head]
        a = _haze(depth)[:, None, None]
        rgb = np.rint(rgb * (1 - a) + HAZE * a).astype(np.int64)
        return [[tuple(c) for c in box] for box in rgb.tolist()]

    def _clipped(self, poly_cam: np.ndarray) -> np.ndarray | None:
        """Face polygon (K, 3) in camera coordinates clipped to z >= near (Sutherland-Hodgman), projected."""
        near, k = self.config.near, self.config.intrinsics
        out = []
        for a, b in zip(poly_cam, np.roll(poly_cam, -1, axis=0)):
            if a[2] >= near:
                out.append(a)
            if (a[2] >= near) != (b[2] >= near):
                out.append(a + (near - a[2]) / (b[2] - a[2]) * (b - a))
        if len(out) < 3:
            return None
        p = np.asarray(out)
        uv = np.stack([k[0, 0] * p[:, 0] / p[:, 2] + k[0, 2], k[1, 1] * p[:, 1] / p[:, 2] + k[1, 2]], -1)
        return np.rint(uv * _ONE).astype(np.int32)


def downsample_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., H, W, 3) uint8 camera frames area-averaged to (..., height, width, 3): what a policy that
    works at a lower resolution than the camera sees (the same function at training and at evaluation)."""
    frames = np.asarray(frames)
    if frames.shape[-3:-1] == (height, width):
        return frames
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in flat])
    return out.reshape(*frames.shape[:-3], height, width, 3)
