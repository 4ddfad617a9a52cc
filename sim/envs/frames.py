"""Frames the environments show: camera images of log or simulated states, and camera|BEV composites."""
from __future__ import annotations

import cv2
import numpy as np

from scenarios.scene import Scene
from sim.map import RoadMap
from sim.render.bev import BEVConfig, bev_to_rgb, draw_bev_polylines, render_bev_channels
from sim.render.camera import CameraConfig, CameraRenderer
from sim.state import AgentSlice

PLANNED_COLOUR = (30, 170, 60)
EXECUTED_COLOUR = (230, 120, 20)
LOGGED_COLOUR = (120, 120, 120)
COMPOSITE_BEV = BEVConfig(width=256, height=256, resolution=0.25, ahead_m=16.0)


class FrameRenderer:
    """One scene's renderers (the camera caches its ground texture, so keep one per scene)."""

    def __init__(self, road_map: RoadMap, camera: CameraConfig, bev: BEVConfig = COMPOSITE_BEV):
        self.road_map = road_map
        self.camera_renderer = CameraRenderer(road_map, camera)
        self.bev = bev

    def camera(self, ego_pose: np.ndarray, agents: AgentSlice | None, light_status: dict[str, int] | None) -> np.ndarray:
        return self.camera_renderer.render(ego_pose[:3], agents, light_status)

    def log_camera(self, scene: Scene, step: int) -> np.ndarray:
        """The camera image the log shows at `step`."""
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
