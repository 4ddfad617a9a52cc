"""Write Scenes as NAVSIM/OpenScene log pickles (their 2 Hz frames) and their maps as one nuPlan maps root.

An export (`NavsimExport`) puts every scene's map into ONE nuPlan city's map.gpkg, as NAVSIM and
nuPlan require (`map_location` must be one of nuPlan's four cities, and nuPlan loads all four): scene
k is moved by a whole number of metres to its own square slot of SLOT_SIZE_M (a grid that grows from
the origin: slot 0 is not moved), so the maps of two scenes are at least MIN_MAP_GAP_M apart, and its
fids are k * FID_BLOCK + 1 ... The other three cities get a map with empty tables; the maps index
lists all four with nuPlan's versions.

Every frame dict carries the keys and value types of an OpenScene log (spec §4.1). Things a
NAVSIM log cannot say are kept under one extra key, `w0sim`, which NAVSIM ignores: which w0sim
light drives each lane connector and its full status (logs only know `is_red`), the original track
ids (vehicle colours in the camera hash them) and the command text. The reader uses it when it
is there, so a written scene reads back with the same lights, tracks and text; real logs do
without it.
"""
from __future__ import annotations

import hashlib
import math
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np

from scenarios.log_frames import frame_steps
from scenarios.navsim_logs import EXTENSION_KEY, NUPLAN_NAMES
from scenarios.nuplan_map import MAP_VERSIONS, nuplan_map_path
from scenarios.nuplan_map_writer import FID_BLOCK, NuplanMapFile, NuplanMapIds, translated_map, write_nuplan_maps_index
from sim.geometry import principal_value
from sim.render.camera import CAM_F0_HEIGHT, CAM_F0_WIDTH, CameraConfig, CameraRenderer
from sim.route import route_lane_groups
from sim.scene import Scene
from sim.state import AgentType, StateIndex, TrafficLightStatus

DEFAULT_MAP_LOCATION = "us-nv-las-vegas-strip"  # the nuPlan city whose map holds an export's scenes
SLOT_SIZE_M = 2048  # each scene's square slot in the city map (integer metres: moving a scene adds whole metres)
# Least distance between two scenes' maps: more than the metric cache's ±100 m map box and the reader's 300 m crop.
MIN_MAP_GAP_M = 400
SLOT_REACH_M = (SLOT_SIZE_M - MIN_MAP_GAP_M) / 2  # a scene's map and ego path must lie within this of its origin
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


class ExportError(ValueError):
    """An export cannot be written: the folder holds another export, or a scene does not fit its slot."""


def slot_offset(slot: int) -> tuple[int, int]:
    """(x, y) metres by which scene `slot` is moved: slots fill squares of growing size from the origin
    (slot 0 at (0, 0); slots 1-3 complete the 2 x 2 square, 4-8 the 3 x 3 one...)."""
    shell = math.isqrt(slot)
    k = slot - shell * shell
    column, row = (shell, k) if k <= shell else (2 * shell - k, shell)
    return column * SLOT_SIZE_M, row * SLOT_SIZE_M


def check_slot_fit(scene: Scene) -> None:
    """ExportError unless the scene's map and ego path lie within SLOT_REACH_M of its own origin."""
    xy = scene.ego_log[:, [StateIndex.X, StateIndex.Y]]
    low = np.minimum(scene.map.bounds[:2], xy.min(axis=0)) if len(scene.map.lanes) else xy.min(axis=0)
    high = np.maximum(scene.map.bounds[2:], xy.max(axis=0)) if len(scene.map.lanes) else xy.max(axis=0)
    if (low < -SLOT_REACH_M).any() or (high > SLOT_REACH_M).any():
        raise ExportError(f"scene {scene.token}: its map and ego path span x {low[0]:.0f}..{high[0]:.0f} m, "
                          f"y {low[1]:.0f}..{high[1]:.0f} m; an exported scene must lie within ±{SLOT_REACH_M:.0f} m "
                          f"of its origin (slots of {SLOT_SIZE_M} m, {MIN_MAP_GAP_M} m between scenes' maps)")


class NavsimExport:
    """Scenes written one by one as NAVSIM logs (`<logs_dir>/<log_name>.pkl`) into one nuPlan maps root.

    Every scene's map goes into `location`'s map.gpkg, scene k (in the order added) moved by `slot_offset(k)`
    with fids from k * FID_BLOCK; the ego poses in its log are moved alike (boxes are ego-relative). `close`
    (or leaving the with block) writes the other three cities' empty maps and the maps index. A maps root
    holds one export: `maps_root` and `logs_dir` must be empty or absent, unless `overwrite`, which removes
    them (and `sensor_blobs_dir`) first. With `sensor_blobs_dir`, CAM_F0 images are written too.
    """

    def __init__(self, logs_dir: str | Path, maps_root: str | Path, location: str = DEFAULT_MAP_LOCATION,
                 sensor_blobs_dir: str | Path | None = None, overwrite: bool = False) -> None:
        if location not in MAP_VERSIONS:
            raise ExportError(f"unknown nuPlan map location {location!r}; expected one of {sorted(MAP_VERSIONS)}")
        self.logs_dir, self.maps_root, self.location = Path(logs_dir), Path(maps_root), location
        self.sensor_blobs_dir = None if sensor_blobs_dir is None else Path(sensor_blobs_dir)
        folders = [self.maps_root, self.logs_dir] + ([self.sensor_blobs_dir] if self.sensor_blobs_dir else [])
        for folder in folders:
            if folder.is_dir() and any(folder.iterdir()):
                if not overwrite:
                    raise ExportError(f"{folder} is not empty: an export's maps root holds only its own scenes "
                                      "(write to a new folder, or overwrite it: --overwrite)")
                shutil.rmtree(folder)
        self.map_file = NuplanMapFile(nuplan_map_path(self.maps_root, location, MAP_VERSIONS[location]), location)
        self.count = 0

    def add(self, scene: Scene, log_name: str | None = None) -> Path:
        """Write the scene's log and append its map in the next slot; returns the log's path."""
        check_slot_fit(scene)
        slot = self.count
        offset = slot_offset(slot)
        ids = self.map_file.add(translated_map(scene.map, offset), fid_base=slot * FID_BLOCK)
        self.count += 1
        return _write_log(scene, ids, offset, self.location, self.logs_dir, log_name, self.sensor_blobs_dir)

    def close(self) -> None:
        """Finish the city map, write the other cities' empty maps and the maps index (all four cities)."""
        if self.map_file is None:
            return
        self.map_file.close()
        self.map_file = None
        for city, version in MAP_VERSIONS.items():
            if city != self.location:
                NuplanMapFile(nuplan_map_path(self.maps_root, city, version), city).close()
        write_nuplan_maps_index(self.maps_root)

    def __enter__(self) -> NavsimExport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def route_roadblocks(scene: Scene, ids: NuplanMapIds) -> list[str]:
    """The route's lane groups in driving order (consecutive repeats merged), as map fids."""
    return [ids.roadblock_id(g) for g in route_lane_groups(scene.map, scene.route)]


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


def _frame(scene: Scene, step: int, token: str, names: dict, ids: NuplanMapIds, roadblocks: list[str],
           offset: tuple[int, int] = (0, 0)) -> dict:
    """One OpenScene frame dict of the scene at 10 Hz step `step`, the ego pose moved by `offset`."""
    ego = scene.ego_log[step]
    heading = float(ego[StateIndex.HEADING])
    translation = np.array([ego[StateIndex.X] + offset[0], ego[StateIndex.Y] + offset[1], 0.0])
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
        EXTENSION_KEY: {"traffic_lights": light_states, "track_ids": track_ids, "command_text": scene.command_text,
                        "family": scene.family},
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
                     sensor_blobs_dir: str | Path | None = None, map_location: str = DEFAULT_MAP_LOCATION,
                     overwrite: bool = False) -> Path:
    """A one-scene export (`NavsimExport`): `<logs_dir>/<log_name>.pkl` and its maps root, the scene not moved.
    Returns the log's path."""
    with NavsimExport(logs_dir, maps_root, map_location, sensor_blobs_dir, overwrite) as export:
        return export.add(scene, log_name)


def _write_log(scene: Scene, ids: NuplanMapIds, offset: tuple[int, int], location: str, logs_dir: Path,
               log_name: str | None, sensor_blobs_dir: Path | None) -> Path:
    """`<logs_dir>/<log_name>.pkl`, one frame per 2 Hz frame step. The current frame's token is the scene's token,
    so NAVSIM's SceneFilter (4 history + 10 future frames) finds the scene again when it has 3 frames of history."""
    log_name = log_name or f"w0sim_{scene.family}_{scene.token}"
    steps = frame_steps(scene.current_index, scene.num_steps)
    tokens = [scene.token if step == scene.current_index else hex_token(scene.token, "frame", step) for step in steps]
    names = {"log_name": log_name, "log_token": hex_token(log_name, "log"), "scene_name": log_name,
             "scene_token": hex_token(log_name, "scene"), "vehicle_name": "w0sim", "map_location": location}
    roadblocks = route_roadblocks(scene, ids)
    frames = [_frame(scene, int(step), token, names, ids, roadblocks, offset) for step, token in zip(steps, tokens)]
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


__all__ = ["DEFAULT_MAP_LOCATION", "ExportError", "NavsimExport", "check_slot_fit", "hex_token", "route_roadblocks",
           "slot_offset", "write_camera_images", "write_navsim_log", "yaw_quaternion"]
