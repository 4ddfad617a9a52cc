"""Renderers: a pinhole front camera (shaded boxes on a textured ground) and semantic / colour BEV rasters."""
from sim.render.bev import (
    BEV_CHANNELS,
    BEVConfig,
    bev_pixels,
    bev_to_rgb,
    draw_bev_polylines,
    render_bev_channels,
    render_map_overview,
)
from sim.render.camera import CameraConfig, CameraRenderer, camera_pose
from sim.render.map_paint import map_paint

__all__ = [
    "BEV_CHANNELS",
    "BEVConfig",
    "CameraConfig",
    "CameraRenderer",
    "bev_pixels",
    "bev_to_rgb",
    "camera_pose",
    "draw_bev_polylines",
    "map_paint",
    "render_bev_channels",
    "render_map_overview",
]
