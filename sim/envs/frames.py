"""Frames the environments show: camera images of log or simulated states, and camera|BEV composites.

A scene read from a NAVSIM log with sensor blobs lists its CAM_F0 images by step
(`metadata["camera_images"]`); the log camera shows those, fitted to the configured camera.
"""
from __future__ import annotations

import cv2
import numpy as np

from sim.map import RoadMap
from sim.render.bev import BEVConfig, bev_to_rgb, draw_bev_polylines, render_bev_channels
from sim.render.camera import CameraConfig, CameraRenderer
from sim.scene import Scene
from sim.state import AgentSlice

PLANNED_COLOUR = (30, 170, 60)
EXECUTED_COLOUR = (230, 120, 20)
LOGGED_COLOUR = (120, 120, 120)
COMPOSITE_BEV = BEVConfig(width=256, height=256, resolution=0.25, ahead_m=16.0)


def read_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of a file; FileNotFoundError when it cannot be read."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: camera image missing or unreadable")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fit_image(image: np.ndarray, camera: CameraConfig) -> np.ndarray:
    """A CAM_F0-like image as `camera` sees it: scaled to its width (same field of view), then its rows
    cropped (or padded with edge rows) about the centre to its height, as CameraConfig's vertical crop."""
    height = max(1, int(round(image.shape[0] * camera.width / image.shape[1])))
    image = cv2.resize(image, (camera.width, height), interpolation=cv2.INTER_AREA)
    top = (height - camera.height) // 2
    if top >= 0:
        return np.ascontiguousarray(image[top : top + camera.height])
    return cv2.copyMakeBorder(image, -top, camera.height - height + top, 0, 0, cv2.BORDER_REPLICATE)


class FrameRenderer:
    """One scene's renderers (the camera caches its ground texture, so keep one per scene)."""

    def __init__(self, road_map: RoadMap, camera: CameraConfig, bev: BEVConfig = COMPOSITE_BEV):
        self.road_map = road_map
        self.camera_renderer = CameraRenderer(road_map, camera)
        self.bev = bev
        self._log_images: dict[str, np.ndarray] = {}

    def camera(self, ego_pose: np.ndarray, agents: AgentSlice | None, light_status: dict[str, int] | None) -> np.ndarray:
        return self.camera_renderer.render(ego_pose[:3], agents, light_status)

    def log_camera(self, scene: Scene, step: int) -> np.ndarray:
        """The camera image the log shows at `step`: the log's own CAM_F0 image when it has one (and this is the
        front camera), else rendered from the map and boxes."""
        path = scene.metadata.get("camera_images", {}).get(str(step))
        if path is not None and self.camera_renderer.config.yaw == 0.0:  # the log's images are CAM_F0's
            if path not in self._log_images:
                self._log_images[path] = fit_image(read_rgb(path), self.camera_renderer.config)
            return self._log_images[path].copy()
        return self.camera(scene.ego_log[step], scene.agents.at(step), scene.light_status_at(step))

    def composite(self, ego_state: np.ndarray, agents: AgentSlice | None, light_status: dict[str, int] | None,
                  route: list[str], planned: np.ndarray | None = None, executed: np.ndarray | None = None,
                  logged: np.ndarray | None = None) -> np.ndarray:
        """Camera (scaled to the BEV's height) beside a BEV with the logged (grey), planned (green) and
        executed (orange) ego paths."""
        image = self.camera(ego_state, agents, light_status)
        bev = bev_to_rgb(render_bev_channels(self.road_map, ego_state[:3], agents, route, self.bev))
        lines, colours = [], []
        for path, colour in ((logged, LOGGED_COLOUR), (planned, PLANNED_COLOUR), (executed, EXECUTED_COLOUR)):
            if path is not None and len(path):
                lines.append(np.asarray(path)[:, :2])
                colours.append(colour)
        draw_bev_polylines(bev, ego_state[:3], lines, colours, self.bev, thickness=2, point_radius=0)
        scale = self.bev.height / image.shape[0]
        image = cv2.resize(image, (int(round(image.shape[1] * scale)), self.bev.height), interpolation=cv2.INTER_LINEAR)
        return np.concatenate([image, bev], axis=1)
