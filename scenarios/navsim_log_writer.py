"""Write a Scene as a NAVSIM/OpenScene log pickle (its 2 Hz frames) beside its map as a nuPlan GeoPackage.

Every frame dict carries the keys and value types of an OpenScene log (spec §4.1). Things a
NAVSIM log cannot say are kept under one extra key, `w0sim`, which NAVSIM ignores: which w0sim
light drives each lane connector and its full status (logs only know `is_red`), the original track
ids (vehicle colours in the camera hash them) and the command text. The reader uses it when it
is there, so a written scene reads back with the same lights, tracks and text; real logs do
without it.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import cv2
import numpy as np

from scenarios.log_frames import frame_steps
from scenarios.navsim_logs import EXTENSION_KEY, NUPLAN_NAMES
from scenarios.nuplan_map import nuplan_map_path
from scenarios.nuplan_map_writer import NuplanMapIds, write_nuplan_map, write_nuplan_maps_index
from sim.geometry import principal_value
from sim.render.camera import CAM_F0_HEIGHT, CAM_F0_WIDTH, CameraConfig, CameraRenderer
from sim.scene import Scene
from sim.state import AgentType, StateIndex, TrafficLightStatus

# A generated scene has its own map; it gets its own map location (and a version of w0sim's).
GENERATED_LOCATION_PREFIX = "w0sim-"
GENERATED_MAP_VERSION = "w0sim.1"
# The city whose UTM zone a generated map's metadata names (coordinates are stored as they are).
GENERATED_MAP_CITY = "us-nv-las-vegas-strip"
BASE_TIMESTAMP_US = 1_620_000_000_000_000
# OpenScene's eight cameras and the yaw (rad, CCW) each looks at; CAM_F0 is the one w0sim renders.
CAMERA_YAWS = {"CAM_F0": 0.0, "CAM_L0": np.deg2rad(55), "CAM_L1": np.deg2rad(110), "CAM_L2": np.deg2rad(150),
               "CAM_R0": np.deg2rad(-55), "CAM_R1": np.deg2rad(-110), "CAM_R2": np.deg2rad(-150), "CAM_B0": np.pi}
BLOB_IMAGE_WIDTH = 480  # written images are CAM_F0's view at this width (16:9), jpg as NAVSIM's
# Camera axes (x right, y down, z forward) in the lidar frame (x forward, y left, z up), looking ahead.
_CAMERA_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def hex_token(*parts: object) -> str:
    """16 hex characters, stable for `parts` (a NAVSIM-like token)."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16]


def yaw_quaternion(heading: float) -> list[float]:
    """(w, x, y, z) of a rotation by `heading` about the up axis."""
    return [float(np.cos(heading / 2)), 0.0, 0.0, float(np.sin(heading / 2))]


def _pose_matrix(rotation: np.ndarray, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, translation
    return matrix


def _yaw_matrix(heading: float) -> np.ndarray:
    c, s = np.cos(heading), np.sin(heading)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def write_scene_map(scene: Scene, maps_root: str | Path, location: str | None = None) -> tuple[str, NuplanMapIds]:
    """Write the scene's map as `<maps_root>/<location>/<version>/map.gpkg` and list it in the maps index.

    `location` None gives the scene a location of its own (`w0sim-<token>`); a nuPlan city name writes
    the map as that city's (replacing the file there). Returns the location and the id mapping.
    """
    location = location or f"{GENERATED_LOCATION_PREFIX}{scene.token}"
    if location.startswith(GENERATED_LOCATION_PREFIX):
        write_nuplan_maps_index(maps_root, {location: GENERATED_MAP_VERSION})
        ids = write_nuplan_map(scene.map, nuplan_map_path(maps_root, location), location=GENERATED_MAP_CITY)
    else:
        ids = write_nuplan_map(scene.map, nuplan_map_path(maps_root, location), location=location)
    return location, ids


def route_roadblocks(scene: Scene, ids: NuplanMapIds) -> list[str]:
    """The route's lane groups in driving order (consecutive repeats merged), as map fids."""
    groups: list[str] = []
    for lane_id in scene.route:
        group = scene.map.lane(lane_id).lane_group
        if not groups or groups[-1] != group:
            groups.append(group)
    return [ids.roadblock_id(g) for g in groups]


def _cameras(log_name: str, token: str) -> dict:
    """The eight `cams` entries: paths, extrinsics (camera -> lidar = ego rear axle) and CAM_F0's intrinsics."""
    config = CameraConfig(width=CAM_F0_WIDTH, height=CAM_F0_HEIGHT)
    cams = {}
    for name, yaw in CAMERA_YAWS.items():
        cams[name] = {
            "data_path": f"{log_name}/{name}/{token}.jpg",
            "sensor2lidar_rotation": _yaw_matrix(yaw) @ _CAMERA_AXES,
            "sensor2lidar_translation": np.array([config.mount_x, config.mount_y, config.mount_z]),
            "cam_intrinsic": config.intrinsics,
            "distortion": np.zeros(5),
        }
    return cams


def _annotations(scene: Scene, step: int, log_name: str) -> tuple[dict, list[str]]:
    """`anns` of one step (boxes and velocities in the ego frame) and the w0sim track ids of its rows."""
    ego, tracks = scene.ego_log[step], scene.agents.at(step)
    rows = np.flatnonzero(tracks.valid)
    c, s = np.cos(ego[StateIndex.HEADING]), np.sin(ego[StateIndex.HEADING])
    dx, dy = tracks.x[rows] - ego[StateIndex.X], tracks.y[rows] - ego[StateIndex.Y]
    heading = tracks.heading[rows] - ego[StateIndex.HEADING]
    boxes = np.stack([c * dx + s * dy, -s * dx + c * dy, tracks.height[rows] / 2, tracks.length[rows],
                      tracks.width[rows], tracks.height[rows], principal_value(heading)], axis=1)
    vx, vy = tracks.vx[rows], tracks.vy[rows]
    velocity = np.stack([c * vx + s * vy, -s * vx + c * vy, np.zeros(len(rows))], axis=1)
    ids = [tracks.track_ids[i] for i in rows]
    anns = {
        "gt_boxes": boxes.reshape(-1, 7), "gt_velocity_3d": velocity.reshape(-1, 3),
        "gt_names": np.array([NUPLAN_NAMES[AgentType(int(tracks.agent_type[i]))] for i in rows], dtype="<U16"),
        "instance_tokens": [hex_token(log_name, "instance", i) for i in ids],
        "track_tokens": [hex_token(log_name, "track", i) for i in ids],
    }
    return anns, ids


def _lights(scene: Scene, step: int, ids: NuplanMapIds) -> tuple[list[tuple[int, bool]], list[tuple[int, str, int]]]:
    """NAVSIM's (connector fid, is_red) of the lights with a known state, and w0sim's (fid, light id, status)."""
    navsim, full = [], []
    for light_id, status in zip(scene.light_ids, scene.light_status[step].tolist()):
        for lane_id in ids.light_lane_ids(light_id):
            full.append((int(lane_id), light_id, int(status)))
            if status != TrafficLightStatus.UNKNOWN:
                navsim.append((int(lane_id), status == TrafficLightStatus.RED))
    return navsim, full


def _frame(scene: Scene, step: int, token: str, names: dict, ids: NuplanMapIds, roadblocks: list[str]) -> dict:
    """One OpenScene frame dict of the scene at 10 Hz step `step`."""
    ego = scene.ego_log[step]
    heading = float(ego[StateIndex.HEADING])
    translation = np.array([ego[StateIndex.X], ego[StateIndex.Y], 0.0])
    rotation = yaw_quaternion(heading)
    ego2global = _pose_matrix(_yaw_matrix(heading), translation)
    velocity = ego[[StateIndex.VELOCITY_X, StateIndex.VELOCITY_Y]]
    acceleration = ego[[StateIndex.ACCELERATION_X, StateIndex.ACCELERATION_Y]]
    can_bus = np.zeros(18)
    can_bus[:3], can_bus[3:7] = translation, rotation
    can_bus[7:9], can_bus[10:12], can_bus[15] = acceleration, velocity, ego[StateIndex.ANGULAR_VELOCITY]
    anns, track_ids = _annotations(scene, step, names["log_name"])
    traffic_lights, light_states = _lights(scene, step, ids)
    command = np.zeros(4, dtype=np.int64)
    command[int(scene.driving_command[step])] = 1
    return {
        "token": token, "frame_idx": 0, "timestamp": BASE_TIMESTAMP_US + int(step) * 100_000,
        **names, "roadblock_ids": list(roadblocks), "can_bus": can_bus,
        "lidar_path": f"{names['log_name']}/MergedPointCloud/{token}.pcd",
        "lidar2ego_translation": np.zeros(3), "lidar2ego_rotation": [1.0, 0.0, 0.0, 0.0], "lidar2ego": np.eye(4),
        "ego2global": ego2global, "lidar2global": ego2global.copy(),
        "ego2global_translation": translation, "ego2global_rotation": rotation,
        "ego_dynamic_state": [float(v) for v in (*velocity, *acceleration)],
        "traffic_lights": traffic_lights, "driving_command": command,
        "cams": _cameras(names["log_name"], token), "sample_prev": None, "sample_next": None, "anns": anns,
        EXTENSION_KEY: {"traffic_lights": light_states, "track_ids": track_ids, "command_text": scene.command_text},
    }


def write_camera_images(scene: Scene, frames: list[dict], steps: np.ndarray, sensor_blobs_dir: str | Path) -> None:
    """CAM_F0 jpgs of the scene at each frame step, at `<sensor_blobs>/<data_path>` (rendered from map and boxes)."""
    renderer = CameraRenderer(scene.map, CameraConfig(width=BLOB_IMAGE_WIDTH,
                                                      height=round(BLOB_IMAGE_WIDTH * CAM_F0_HEIGHT / CAM_F0_WIDTH)))
    for frame, step in zip(frames, steps.tolist()):
        image = renderer.render(scene.ego_log[step, :3], scene.agents.at(step), scene.light_status_at(step))
        path = Path(sensor_blobs_dir) / frame["cams"]["CAM_F0"]["data_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def write_navsim_log(scene: Scene, logs_dir: str | Path, maps_root: str | Path, log_name: str | None = None,
                     sensor_blobs_dir: str | Path | None = None, map_location: str | None = None) -> Path:
    """Write `scene` as `<logs_dir>/<log_name>.pkl`, one frame per 2 Hz frame step, and its map under `maps_root`.

    The current frame's token is the scene's token, so NAVSIM's SceneFilter (4 history + 10 future frames)
    finds the scene again when it has 3 frames of history. With `sensor_blobs_dir`, CAM_F0 images are
    written too. Returns the log's path.
    """
    log_name = log_name or f"w0sim_{scene.family}_{scene.token}"
    location, ids = write_scene_map(scene, maps_root, map_location)
    steps = frame_steps(scene.current_index, scene.num_steps)
    tokens = [scene.token if step == scene.current_index else hex_token(scene.token, "frame", step) for step in steps]
    names = {"log_name": log_name, "log_token": hex_token(log_name, "log"), "scene_name": log_name,
             "scene_token": hex_token(log_name, "scene"), "vehicle_name": "w0sim", "map_location": location}
    roadblocks = route_roadblocks(scene, ids)
    frames = [_frame(scene, int(step), token, names, ids, roadblocks) for step, token in zip(steps, tokens)]
    for k, frame in enumerate(frames):
        frame["frame_idx"] = k
        frame["sample_prev"] = tokens[k - 1] if k else None
        frame["sample_next"] = tokens[k + 1] if k + 1 < len(tokens) else None
    if sensor_blobs_dir is not None:
        write_camera_images(scene, frames, steps, sensor_blobs_dir)
    path = Path(logs_dir) / f"{log_name}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        pickle.dump(frames, handle, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)  # atomic: a reader never sees half a log
    return path


__all__ = ["hex_token", "route_roadblocks", "write_camera_images",
           "write_navsim_log", "write_scene_map", "yaw_quaternion"]
