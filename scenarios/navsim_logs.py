"""Read NAVSIM/OpenScene log pickles, slice them into scenes as NAVSIM's SceneFilter does, and rebuild 10 Hz Scenes.

A log is a pickled list of 2 Hz frame dicts (spec §4.1). `scene_from_frames` turns one window of
frames into a `Scene` the way NAVSIM's metric cache sees it: ego states and object boxes
interpolated between frames (`scenarios.log_frames`), lights and commands held, the route rebuilt
as the lane chain through the frame's roadblocks, the map cropped (`window_map`) from the nuPlan
GeoPackage of the log's location (read once per process). Pickles can run code when loaded: read
only logs you trust (as NAVSIM does).
"""
from __future__ import annotations

import dataclasses
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

from scenarios.log_frames import FRAME_STRIDE, hold_frames, interpolate_states, interpolate_tracks
from scenarios.nuplan_map import MapFormatError, NuplanMapContents, nuplan_map_path
from sim.geometry import principal_value
from sim.map import MapError, RoadMap
from sim.scene import Scene
from sim.state import STATE_SIZE, AgentTracks, AgentType, StateIndex, TrafficLightStatus

NUM_HISTORY_FRAMES = 4
NUM_FUTURE_FRAMES = 10
REQUIRED_KEYS = ("token", "timestamp", "log_name", "map_location", "roadblock_ids", "ego2global_translation",
                 "ego2global_rotation", "ego_dynamic_state", "traffic_lights", "driving_command", "anns")
REQUIRED_ANNOTATIONS = ("gt_boxes", "gt_names", "gt_velocity_3d", "track_tokens")
FRAME_SHAPES = {"ego2global_translation": (3,), "ego2global_rotation": (4,), "ego_dynamic_state": (4,),
                "driving_command": (4,)}
# Extra frame key of w0sim-written logs (NAVSIM ignores it): full light states, track ids, command text.
EXTENSION_KEY = "w0sim"
NUPLAN_NAMES = {
    AgentType.VEHICLE: "vehicle", AgentType.PEDESTRIAN: "pedestrian", AgentType.BICYCLE: "bicycle",
    AgentType.TRAFFIC_CONE: "traffic_cone", AgentType.BARRIER: "barrier", AgentType.CZONE_SIGN: "czone_sign",
    AgentType.GENERIC_OBJECT: "generic_object",
}
AGENT_TYPES = {name: code for code, name in NUPLAN_NAMES.items()}
MAP_ALIASES = {"las_vegas": "us-nv-las-vegas-strip"}  # OpenScene's short name, renamed as NAVSIM does
# A scene reads the part of its (city) map within this of the ego's and the objects' positions in its window:
# more than the metric cache's ±100 m map box and than the look-ahead of a planner's route and forecasts.
CROP_RADIUS_M = 300.0


class NavsimLogError(ValueError):
    """A NAVSIM log (or the map it needs) cannot be used: names the file, frame and key at fault."""


# --- reading and checking ---------------------------------------------------------------------


def load_navsim_log(path: str | Path) -> list[dict]:
    """The frames of a log pickle, checked for the keys and shapes a scene needs."""
    path = Path(path)
    if not path.is_file():
        raise NavsimLogError(f"{path}: no such NAVSIM log file")
    try:
        with path.open("rb") as handle:
            frames = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise NavsimLogError(f"{path}: not a readable log pickle (truncated or corrupt: {type(exc).__name__}: {exc})") from None
    check_frames(frames, str(path))
    return frames


def check_frames(frames: object, source: str) -> None:
    """Raise NavsimLogError unless `frames` is a list of frame dicts with the required keys and shapes."""
    if not isinstance(frames, list):
        raise NavsimLogError(f"{source}: a NAVSIM log is a list of frame dicts, got {type(frames).__name__}")
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise NavsimLogError(f"{source}: frame {index} is a {type(frame).__name__}, not a dict")
        where = f"{source}: frame {index} (token {frame.get('token', '?')})"
        if missing := [key for key in REQUIRED_KEYS if key not in frame]:
            raise NavsimLogError(f"{where}: missing key {missing[0]!r}")
        for key, shape in FRAME_SHAPES.items():
            if np.shape(frame[key]) != shape:
                raise NavsimLogError(f"{where}: {key!r} has shape {np.shape(frame[key])}, expected {shape}")
        anns = frame["anns"]
        if not isinstance(anns, dict) or (missing := [k for k in REQUIRED_ANNOTATIONS if k not in anns]):
            raise NavsimLogError(f"{where}: 'anns' lacks {missing[0] if isinstance(anns, dict) else 'a dict'!r}")
        count = len(anns["track_tokens"])
        for key, width in (("gt_boxes", 7), ("gt_velocity_3d", 3)):
            if np.shape(anns[key]) != (count, width) and not (count == 0 and np.size(anns[key]) == 0):
                raise NavsimLogError(f"{where}: anns {key!r} has shape {np.shape(anns[key])}, expected ({count}, {width})")
        if len(anns["gt_names"]) != count:
            raise NavsimLogError(f"{where}: anns 'gt_names' has {len(anns['gt_names'])} names for {count} tracks")


def filter_scenes(frames: list[dict], num_history_frames: int = NUM_HISTORY_FRAMES,
                  num_future_frames: int = NUM_FUTURE_FRAMES, frame_interval: int | None = None,
                  tokens: set[str] | list[str] | None = None, max_scenes: int | None = None) -> list[list[dict]]:
    """NAVSIM's SceneFilter on one log: windows of history + future frames starting every `frame_interval`
    (default: a window's length), without short windows, windows whose current frame has no route
    roadblocks, and (given `tokens`) windows whose current frame's token is not listed."""
    num_frames = num_history_frames + num_future_frames
    wanted = None if tokens is None else set(tokens)
    windows = []
    for start in range(0, len(frames), frame_interval or num_frames):
        window = frames[start : start + num_frames]
        if len(window) < num_frames:
            continue
        current = window[num_history_frames - 1]
        if not current["roadblock_ids"] or (wanted is not None and current["token"] not in wanted):
            continue
        windows.append(window)
        if max_scenes is not None and len(windows) >= max_scenes:
            break
    return windows


# --- maps ---------------------------------------------------------------------------------------


def map_file(maps_root: str | Path, location: str) -> Path:
    """The map.gpkg of a location under `maps_root`; NavsimLogError naming both when there is none."""
    location = MAP_ALIASES.get(location, location)
    try:
        path = nuplan_map_path(maps_root, location)
    except MapFormatError as exc:
        raise NavsimLogError(f"no nuPlan map for location {location!r} under maps root {maps_root}: {exc}") from None
    if not path.is_file():
        raise NavsimLogError(f"no nuPlan map for location {location!r} under maps root {maps_root} (expected {path})")
    return path


@lru_cache(maxsize=4)  # a city map is big and all its scenes share it: read each once per process (mtime: if rewritten)
def _read_map(path: str, mtime_ns: int, location: str) -> NuplanMapContents:
    return NuplanMapContents.read(path, location)


def _with_lights(road_map: RoadMap, named: dict[str, str]) -> RoadMap:
    """The map with the named connectors' `traffic_light` set to their w0sim light id (from a w0sim-written log)."""
    lanes = [dataclasses.replace(lane, traffic_light=named[lane.id]) if lane.id in named else lane
             for lane in road_map.lanes]
    return RoadMap(lanes, road_map.areas, name=road_map.name, stop_signs=road_map.stop_signs)


def window_map(contents: NuplanMapContents, window: list[dict], ego: np.ndarray, tracks: AgentTracks,
               num_history_frames: int = NUM_HISTORY_FRAMES) -> RoadMap:
    """The part of a (city) map one window of frames needs: everything within CROP_RADIUS_M of the ego's poses
    and of the objects' boxes in the window, and every lane of the current frame's route roadblocks."""
    points = np.concatenate([ego[:, StateIndex.X : StateIndex.Y + 1],
                             np.stack([tracks.x[tracks.valid], tracks.y[tracks.valid]], axis=-1)])
    roadblocks = [str(r) for r in window[num_history_frames - 1]["roadblock_ids"]]
    return contents.crop(points, CROP_RADIUS_M, roadblocks)


# --- one window -> Scene --------------------------------------------------------------------------


def quaternion_yaw(q) -> float:
    """Yaw of a (w, x, y, z) quaternion (pyquaternion's yaw_pitch_roll[0])."""
    w, x, y, z = (float(v) for v in q)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def frame_ego_states(window: list[dict]) -> np.ndarray:
    """(F, 11) logged ego states: rear-axle pose, body-frame velocity and acceleration, the rest 0."""
    states = np.zeros((len(window), STATE_SIZE))
    for k, frame in enumerate(window):
        states[k, StateIndex.X : StateIndex.Y + 1] = np.asarray(frame["ego2global_translation"], dtype=np.float64)[:2]
        states[k, StateIndex.HEADING] = quaternion_yaw(frame["ego2global_rotation"])
        dynamic = np.asarray(frame["ego_dynamic_state"], dtype=np.float64)
        states[k, StateIndex.VELOCITY_X : StateIndex.ACCELERATION_Y + 1] = dynamic
    return states


def window_tracks(window: list[dict], ego: np.ndarray) -> AgentTracks:
    """10 Hz tracks of every object of the window: global boxes per frame (NAVSIM's conversion), interpolated."""
    columns: dict[str, int] = {}
    rows = []
    for frame in window:
        anns = frame["anns"]
        ids = frame.get(EXTENSION_KEY, {}).get("track_ids") or [str(t) for t in anns["track_tokens"]]
        rows.append([columns.setdefault(i, len(columns)) for i in ids])
    num = len(columns)
    values = {name: np.zeros((len(window), num)) for name in ("x", "y", "heading", "vx", "vy")}
    valid = np.zeros((len(window), num), dtype=bool)
    size, kind = np.zeros((num, 3)), np.zeros(num, dtype=np.int8)
    for k, (frame, cols) in enumerate(zip(window, rows)):
        if not cols:
            continue
        boxes = np.asarray(frame["anns"]["gt_boxes"], dtype=np.float64).reshape(-1, 7)
        velocity = np.asarray(frame["anns"]["gt_velocity_3d"], dtype=np.float64).reshape(-1, 3)
        x, y, h = ego[k, StateIndex.X], ego[k, StateIndex.Y], ego[k, StateIndex.HEADING]
        c, s = np.cos(h), np.sin(h)
        values["x"][k, cols] = c * boxes[:, 0] - s * boxes[:, 1] + x
        values["y"][k, cols] = s * boxes[:, 0] + c * boxes[:, 1] + y
        values["heading"][k, cols] = principal_value(boxes[:, 6] + h)
        values["vx"][k, cols] = c * velocity[:, 0] - s * velocity[:, 1]
        values["vy"][k, cols] = s * velocity[:, 0] + c * velocity[:, 1]
        first = [i for i, col in enumerate(cols) if not valid[:k, col].any()]  # sizes from the first appearance
        size[np.array(cols)[first]] = boxes[first, 3:6]
        kind[np.array(cols)[first]] = [AGENT_TYPES.get(str(frame["anns"]["gt_names"][i]), AGENT_TYPES["generic_object"])
                                       for i in first]
        valid[k, cols] = True
    interpolated, inside = interpolate_tracks(values, valid)
    return AgentTracks(**interpolated, valid=inside, length=size[:, 0], width=size[:, 1], height=size[:, 2],
                       agent_type=kind, track_ids=list(columns))


def window_lights(window: list[dict]) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """(light ids, (F, L) status, connector id -> light id). A w0sim-written log names its lights and their
    full status; otherwise each lit connector is a light, red or green as `is_red` says, unknown when unlisted."""
    if all(EXTENSION_KEY in frame for frame in window):
        entries = [[(str(fid), light, int(status)) for fid, light, status in f[EXTENSION_KEY]["traffic_lights"]]
                   for f in window]
        named = {fid: light for frame in entries for fid, light, _ in frame}
        ids = list(dict.fromkeys(named.values()))
        status = np.full((len(window), len(ids)), TrafficLightStatus.UNKNOWN, dtype=np.int8)
        for k, frame in enumerate(entries):
            for _, light, value in frame:
                status[k, ids.index(light)] = value
        return ids, status, named
    seen = sorted({int(fid) for frame in window for fid, _ in frame["traffic_lights"]})
    ids = [str(fid) for fid in seen]
    status = np.full((len(window), len(ids)), TrafficLightStatus.UNKNOWN, dtype=np.int8)
    for k, frame in enumerate(window):
        for fid, is_red in frame["traffic_lights"]:
            status[k, ids.index(str(int(fid)))] = TrafficLightStatus.RED if is_red else TrafficLightStatus.GREEN
    return ids, status, {}


def _heading_at(line: np.ndarray, end: bool) -> float:
    d = line[-1] - line[-2] if end else line[1] - line[0]
    return float(np.arctan2(d[1], d[0]))


def _straightest(road_map: RoadMap, anchor: str, candidates: list[str], forward: bool) -> str:
    """The candidate that turns least from `anchor` (compared at their far ends: where each leads)."""
    base = _heading_at(road_map.lane(anchor).centerline, end=forward)
    turns = [abs(float(principal_value(_heading_at(road_map.lane(c).centerline, end=forward) - base))) for c in candidates]
    return candidates[int(np.argmin(turns))]


def route_through_roadblocks(road_map: RoadMap, roadblocks: list[str], ego_pose: np.ndarray) -> list[str]:
    """The lane chain through `roadblocks` (in order) that holds the route lane nearest the ego pose (x, y, heading):
    from that lane, successors inside the same or the next roadblock forwards, predecessors backwards."""
    members: dict[str, list[str]] = {}
    for lane in road_map.lanes:
        members.setdefault(lane.lane_group, []).append(lane.id)
    if unknown := [rb for rb in roadblocks if rb not in members]:
        raise NavsimLogError(f"route roadblock {unknown[0]!r} is not in map {road_map.name!r}")
    candidates = [(k, lane) for k, rb in enumerate(roadblocks) for lane in members[rb]]
    point = np.asarray(ego_pose[:2], dtype=np.float64)
    costs = []
    for _, lane_id in candidates:
        line = road_map.lane(lane_id).centerline
        seg = np.diff(line, axis=0)
        t = np.clip(np.einsum("ij,ij->i", point - line[:-1], seg) / np.maximum(np.einsum("ij,ij->i", seg, seg), 1e-12), 0, 1)
        gaps = np.hypot(*(line[:-1] + t[:, None] * seg - point).T)
        i = int(np.argmin(gaps))
        costs.append(gaps[i] + abs(float(principal_value(np.arctan2(seg[i, 1], seg[i, 0]) - ego_pose[2]))))
    index, start = candidates[int(np.argmin(costs))]
    chain = [start]
    for step, neighbours in ((1, "successors"), (-1, "predecessors")):
        k = index
        while True:
            end = chain[-1] if step > 0 else chain[0]
            links = [l for l in getattr(road_map.lane(end), neighbours) if l not in chain]
            same = [l for l in links if road_map.lane(l).lane_group == roadblocks[k]]
            nxt = k + step
            following = [l for l in links if 0 <= nxt < len(roadblocks) and road_map.lane(l).lane_group == roadblocks[nxt]]
            if not same and not following:
                break
            if not same:
                k = nxt
            chosen = _straightest(road_map, end, same or following, forward=step > 0)
            chain.insert(len(chain) if step > 0 else 0, chosen)
    return chain


def scene_from_frames(window: list[dict], maps_root: str | Path, sensor_blobs: str | Path | None = None,
                      num_history_frames: int = NUM_HISTORY_FRAMES) -> Scene:
    """The 10 Hz Scene of one window of log frames (current frame: index `num_history_frames - 1`)."""
    current = window[num_history_frames - 1]
    location = str(current["map_location"])
    ego_frames = frame_ego_states(window)
    light_ids, light_frames, named = window_lights(window)
    tracks = window_tracks(window, ego_frames)
    path = map_file(maps_root, location)
    try:
        contents = _read_map(str(path), path.stat().st_mtime_ns, MAP_ALIASES.get(location, location))
        road_map = window_map(contents, window, ego_frames, tracks, num_history_frames)
        road_map = _with_lights(road_map, named) if named else road_map
        route = route_through_roadblocks(road_map, [str(r) for r in current["roadblock_ids"]],
                                         ego_frames[num_history_frames - 1])
    except (MapError, NavsimLogError) as exc:
        raise NavsimLogError(f"log {current['log_name']}, token {current['token']}: {exc}") from None
    commands = np.array([int(np.argmax(f["driving_command"])) for f in window], dtype=np.int8)
    metadata = {"source": "navsim", "log_name": str(current["log_name"]), "map_location": location,
                "frame_tokens": [str(f["token"]) for f in window], "num_history_frames": num_history_frames,
                "route_roadblocks": [str(r) for r in current["roadblock_ids"]]}
    if sensor_blobs is not None:
        images = {str(k * FRAME_STRIDE): str(Path(sensor_blobs) / f["cams"]["CAM_F0"]["data_path"])
                  for k, f in enumerate(window) if "CAM_F0" in f.get("cams", {})}
        metadata["camera_images"] = {step: p for step, p in images.items() if Path(p).is_file()}
    return Scene(
        token=str(current["token"]), map=road_map, ego_log=interpolate_states(ego_frames),
        agents=tracks, route=route, current_index=(num_history_frames - 1) * FRAME_STRIDE,
        light_ids=light_ids, light_status=hold_frames(light_frames), driving_command=hold_frames(commands),
        command_text=str(current.get(EXTENSION_KEY, {}).get("command_text", "")), metadata=metadata,
    )


@lru_cache(maxsize=2)  # the scenes of one log are usually loaded one after another
def _cached_log(path: str, mtime_ns: int) -> list[dict]:
    return load_navsim_log(path)


def load_log_scene(log_path: str | Path, start: int, maps_root: str | Path, sensor_blobs: str | Path | None = None,
                   num_history_frames: int = NUM_HISTORY_FRAMES, num_future_frames: int = NUM_FUTURE_FRAMES) -> Scene:
    """The scene of the window of a log starting at frame `start`."""
    log_path = Path(log_path)
    if not log_path.is_file():
        raise NavsimLogError(f"{log_path}: no such NAVSIM log file")
    frames = _cached_log(str(log_path), log_path.stat().st_mtime_ns)
    window = frames[start : start + num_history_frames + num_future_frames]
    if len(window) < num_history_frames + num_future_frames:
        raise NavsimLogError(f"{log_path}: no full window of frames at frame {start} ({len(frames)} frames)")
    return scene_from_frames(window, maps_root, sensor_blobs, num_history_frames)


__all__ = ["EXTENSION_KEY", "NUPLAN_NAMES", "NUM_FUTURE_FRAMES", "NUM_HISTORY_FRAMES", "NavsimLogError", "check_frames",
           "filter_scenes", "frame_ego_states", "load_log_scene", "load_navsim_log", "map_file", "quaternion_yaw",
           "route_through_roadblocks", "scene_from_frames", "window_lights", "window_map", "window_tracks"]
