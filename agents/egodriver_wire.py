"""w0sim on AlpaSim's egodriver contract: its frames, the camera w0sim declares, and w0sim's extension service.

The contract (`egodriver.EgodriverService`, served and driven through the `carla-driver-interface` package) carries
camera images, the ego's poses and dynamic state in a session-fixed `local` frame, the route in the rig frame and
the plan back as timed poses. Its rig frame is w0sim's ego frame (x forward, y left, origin on the ground below the
rear axle). w0sim's own pose (x, y, heading) is a `carla_driver_interface.geometry.Pose` with z = 0.

Between two w0sim processes the contract alone cannot reproduce an in-process evaluation: a NAVSIM scene's history
frames predate the session, a privileged agent plans from the map and objects, which the contract does not carry,
and the contract's poses are float32 (centimetre-level rounding 100 m out moves NAVSIM's ego progress by ~1e-9). So
a w0sim server also serves `w0sim.v1.AgentInputs` on the same port: `Describe` says what the served agent needs
(JSON); `Submit` takes, before each `drive`, the exact `AgentInput` and, for a privileged agent, the `WorldView` (its
map and ego log once per session), as one `.npz` (no pickles: a server never runs what a client sends); `Plan`
gives, after `drive`, the plan that drive returned as float64 poses in the ego frame. Other servers answer
UNIMPLEMENTED and get the contract's inputs only.
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable

import numpy as np
from carla_driver_interface.geometry import Pose, body_to_optical
from carla_driver_interface.protocol import AvailableCamera, CameraSpec, OpenCVPinholeCameraParam, ShutterType

from scenarios.scene import map_from_arrays, map_to_arrays
from sim.agent_input import AgentInput
from sim.map import RoadMap
from sim.render.camera import CameraConfig
from sim.state import AgentSlice, StateIndex, TrajectorySampling
from sim.world_view import WorldView

EXTENSION_SERVICE = "w0sim.v1.AgentInputs"
DESCRIBE_METHOD = f"/{EXTENSION_SERVICE}/Describe"
SUBMIT_METHOD = f"/{EXTENSION_SERVICE}/Submit"
PLAN_METHOD = f"/{EXTENSION_SERVICE}/Plan"
#: The logical id of the camera w0sim renders (NAVSIM's front camera).
FRONT_CAMERA_ID = "CAM_F0"
#: The largest `Submit` payload a server reads (a CARLA town's map is a few MB).
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024

_AGENT_INPUT_ARRAYS = ("ego_poses", "ego_velocity", "ego_acceleration", "driving_command", "ego_state")
_SLICE_ARRAYS = ("x", "y", "heading", "vx", "vy", "valid", "length", "width", "height", "agent_type")


class WireError(ValueError):
    """A payload of w0sim's extension that cannot be read: the message names the field."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# --- frames ------------------------------------------------------------------------------------------------------


def pose_of(x: float, y: float, heading: float) -> Pose:
    """A w0sim pose (x, y, heading) as the contract's pose (z = 0)."""
    return Pose.from_xyz_yaw(float(x), float(y), 0.0, float(heading))


def xy_heading(pose: Pose) -> np.ndarray:
    """(3,) x, y, heading of a contract pose."""
    return np.array([pose.position[0], pose.position[1], pose.yaw], dtype=np.float64)


def front_camera(camera: CameraConfig = CameraConfig()) -> AvailableCamera:
    """w0sim's front camera as contract revision 2 declares it: pinhole intrinsics, and its optical frame in the rig."""
    spec = CameraSpec(
        opencv_pinhole_param=OpenCVPinholeCameraParam(
            principal_point_x=camera.width / 2.0, principal_point_y=camera.height / 2.0,
            focal_length_x=camera.focal, focal_length_y=camera.focal),
        logical_id=FRONT_CAMERA_ID, resolution_w=camera.width, resolution_h=camera.height,
        shutter_type=ShutterType.GLOBAL)
    body = Pose.from_xyz_yaw(camera.mount_x, camera.mount_y, camera.mount_z, camera.yaw) @ Pose.from_axis_angle(
        1, camera.pitch)
    return AvailableCamera(intrinsics=spec, rig_to_camera=body_to_optical(body).to_proto(), logical_id=FRONT_CAMERA_ID)


# --- Describe -----------------------------------------------------------------------------------------------------


def describe(name: str, privileged: bool, cameras: bool, history_frames: int, sampling: TrajectorySampling,
             version: str) -> bytes:
    """`Describe`'s answer: what the served agent needs and plans."""
    return json.dumps({"agent": name, "privileged": privileged, "cameras": cameras, "history_frames": history_frames,
                       "num_poses": sampling.num_poses, "interval_s": sampling.interval, "w0sim": version}).encode()


def read_description(data: bytes) -> dict:
    """`Describe`'s answer, checked."""
    try:
        found = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WireError(f"Describe answered something that is not JSON ({err})") from None
    fields = {"agent": (str, "str"), "privileged": (bool, "bool"), "cameras": (bool, "bool"),
              "history_frames": (_is_int, "int"), "num_poses": (_is_int, "int"), "interval_s": (_is_number, "number"),
              "w0sim": (str, "str")}
    if not isinstance(found, dict):
        raise WireError("Describe answered JSON that is not an object")
    for key, (kind, name) in fields.items():
        value = found.get(key)
        if not (kind(value) if callable(kind) and not isinstance(kind, type) else isinstance(value, kind)):
            raise WireError(f"Describe's answer has no {key!r} of type {name}")
    return found


# --- Submit -------------------------------------------------------------------------------------------------------


def encode_inputs(session_uuid: str, time_now_us: int, agent_input: AgentInput, world: WorldView | None,
                  send_session_data: bool) -> bytes:
    """`Submit`'s payload: the agent input, and the world view if given (its map and ego log only when
    `send_session_data`, on a session's first decision)."""
    arrays = {f"input_{name}": getattr(agent_input, name) for name in _AGENT_INPUT_ARRAYS}
    if agent_input.cameras is not None:
        arrays["input_cameras"] = agent_input.cameras
    header: dict = {"session": session_uuid, "time_now_us": int(time_now_us), "command_text": agent_input.command_text,
                    "world": None, "map": None}
    if world is not None:
        header["world"] = {"route": list(world.route), "history_s": world.history_s, "light_ids": list(world.light_ids),
                           "step": int(world.step), "time_s": world.time_s, "track_ids": list(world.agents.track_ids),
                           "before_track_ids": None if world.agents_before is None else list(world.agents_before.track_ids)}
        arrays["world_ego_state"] = world.ego_state
        arrays["world_light_status"] = np.asarray(world.light_status)
        for name in _SLICE_ARRAYS:
            arrays[f"agents_{name}"] = getattr(world.agents, name)
            if world.agents_before is not None:
                arrays[f"before_{name}"] = getattr(world.agents_before, name)
        if send_session_data:
            header["map"], map_arrays = map_to_arrays(world.road_map)
            arrays.update({f"map_{name}": value for name, value in map_arrays.items()})
            arrays["world_ego_log"] = world.ego_log
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array(json.dumps(header)), **arrays)
    return buffer.getvalue()


def encode_plan_request(session_uuid: str, time_now_us: int) -> bytes:
    return json.dumps({"session": session_uuid, "time_now_us": int(time_now_us)}).encode()


def decode_plan_request(data: bytes) -> tuple[str, int]:
    try:
        request = json.loads(data.decode())
        session, time_now_us = request["session"], request["time_now_us"]
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as err:
        raise WireError(f"Plan request is not {{session, time_now_us}} JSON ({type(err).__name__}: {err})") from None
    if not isinstance(session, str) or not _is_int(time_now_us):
        raise WireError("Plan request needs session (str) and time_now_us (int)")
    return session, time_now_us


def encode_plan(poses: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(poses, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def decode_plan(data: bytes) -> np.ndarray:
    """(N, 3) float64 poses of a `Plan` answer."""
    try:
        poses = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # a damaged .npy fails in many ways
        raise WireError(f"Plan answered something that is not a .npy array ({type(err).__name__}: {err})") from None
    if poses.ndim != 2 or poses.shape[1] != 3 or poses.dtype != np.float64:
        raise WireError(f"Plan answered an array of shape {poses.shape} and dtype {poses.dtype}; expected (N, 3) float64")
    return poses


class SessionWorld:
    """What a session's first `Submit` sent once: the map and the ego log."""

    def __init__(self, road_map: RoadMap, ego_log: np.ndarray):
        self.road_map, self.ego_log = road_map, ego_log


def decode_inputs(data: bytes, session_world: Callable[[str], SessionWorld | None]
                  ) -> tuple[dict, AgentInput, WorldView | None, SessionWorld | None]:
    """(header, agent input, world view or None, the session's map and ego log) of a `Submit` payload.
    `session_world(uuid)`: what the session's first payload sent (None before it)."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise WireError(f"Submit payload of {len(data)} bytes is over the bound {MAX_PAYLOAD_BYTES}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:  # what it holds unpacked, before anything is unpacked
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise WireError(f"Submit payload is not a w0sim inputs archive ({type(err).__name__}: {err})") from None
    if unpacked > MAX_PAYLOAD_BYTES:
        raise WireError(f"Submit payload unpacks to {unpacked} bytes, over the bound {MAX_PAYLOAD_BYTES}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        header = json.loads(str(arrays.pop("header")))
    except Exception as err:  # a damaged archive fails in many ways; each means the payload cannot be read
        raise WireError(f"Submit payload is not a w0sim inputs archive ({type(err).__name__}: {err})") from None
    if not isinstance(header, dict) or not isinstance(header.get("session"), str) \
            or not _is_int(header.get("time_now_us")) or not isinstance(header.get("command_text"), str):
        raise WireError("Submit payload header needs session (str), time_now_us (int) and command_text (str)")

    def array(name: str, shape: tuple, kinds: str = "f") -> np.ndarray:
        """The array `name`, of `shape` (None: any size) and a dtype of `kinds`."""
        if name not in arrays:
            raise WireError(f"Submit payload has no array {name!r}")
        value = arrays[name]
        if value.ndim != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)) \
                or value.dtype.kind not in kinds:
            want = "(" + ", ".join("N" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
            raise WireError(f"Submit payload array {name!r} has shape {value.shape} and dtype {value.dtype}; expected "
                            f"shape {want} of kind {kinds!r}")
        return value

    frames = len(array("input_ego_poses", (None, 3)))
    cameras = array("input_cameras", (frames, None, None, 3), "u") if "input_cameras" in arrays else None
    agent_input = AgentInput(
        ego_poses=array("input_ego_poses", (frames, 3)), ego_velocity=array("input_ego_velocity", (frames, 2)),
        ego_acceleration=array("input_ego_acceleration", (frames, 2)),
        driving_command=array("input_driving_command", (4,), "iu"), cameras=cameras,
        command_text=header["command_text"], ego_state=array("input_ego_state", (len(StateIndex),)))
    info = header.get("world")
    known = session_world(header["session"])
    if info is None:
        return header, agent_input, None, known
    if not isinstance(info, dict):
        raise WireError("Submit payload header world must be an object or null")
    if header.get("map") is not None:
        try:
            road_map = map_from_arrays(header["map"], {name.removeprefix("map_"): value for name, value in arrays.items()
                                                       if name.startswith("map_")})
        except ValueError as err:
            raise WireError(f"Submit payload map: {err}") from None
        known = SessionWorld(road_map, array("world_ego_log", (None, len(StateIndex))))
    if known is None:
        raise WireError("Submit payload has a world view but the session never sent its map (the first payload "
                        "of a session carries it)")

    def agent_slice(prefix: str, track_ids: list[str]) -> AgentSlice:
        values = {name: array(f"{prefix}_{name}", (len(track_ids),), "biuf") for name in _SLICE_ARRAYS}
        return AgentSlice(**values, track_ids=list(track_ids))

    fields = {"route": _is_str_list, "light_ids": _is_str_list, "track_ids": _is_str_list, "step": _is_int,
              "before_track_ids": lambda v: v is None or _is_str_list(v),
              **dict.fromkeys(("history_s", "time_s"), lambda v: _is_number(v) and math.isfinite(v))}
    for key, check in fields.items():
        if not check(info.get(key)):
            raise WireError(f"Submit payload header world.{key} is missing or of the wrong type")
    world = WorldView(known.road_map, info["route"], array("world_ego_state", (len(StateIndex),)),
                      agent_slice("agents", info["track_ids"]),
                      None if info["before_track_ids"] is None else agent_slice("before", info["before_track_ids"]),
                      float(info["history_s"]), info["light_ids"],
                      array("world_light_status", (len(info["light_ids"]),), "iu"), known.ego_log, info["step"],
                      float(info["time_s"]))
    return header, agent_input, world, known


__all__ = ["DESCRIBE_METHOD", "EXTENSION_SERVICE", "FRONT_CAMERA_ID", "PLAN_METHOD", "SUBMIT_METHOD", "SessionWorld",
           "WireError", "decode_inputs", "decode_plan", "decode_plan_request", "describe", "encode_inputs", "encode_plan",
           "encode_plan_request", "front_camera", "pose_of", "read_description", "xy_heading"]
