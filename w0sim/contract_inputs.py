"""What a served agent sees when its client speaks only the egodriver contract (AlpaSim, autoware_carla_scenario,
carla-driver-interface's FakeLoop): its `AgentInput` and, for a privileged agent, a `WorldView` built from the
session's egomotion, route, camera frames and (in carla mode) CARLA's actors.

The contract has no map and no driving command, so both come from the route: the driving command is NAVSIM's rule
(`scenarios.commands.command_at`: where the route point 20 m ahead lies), and the map a privileged agent plans on is
one 3.5 m lane along the route. Poses live in the session's `local` frame, which is the "global" frame of what
this module builds. A w0sim client sends the exact inputs instead (`agents.egodriver_wire`), and none of this runs.
"""
from __future__ import annotations

import cv2
import numpy as np
from carla_driver_interface.driver import CameraFrame, DriveContext, SessionState
from carla_driver_interface.geometry import Pose
from carla_driver_interface.geometry import Trajectory as RigTrajectory

from agents.base import SensorConfig
from agents.egodriver_wire import FRONT_CAMERA_ID, pose_of, xy_heading
from scenarios.commands import command_at
from scenarios.generator.generate import COMMAND_TEXT
from sim.agent_input import HISTORY_STRIDE, AgentInput, build_agent_input
from sim.map import Area, Lane, RoadMap
from sim.render.camera import CameraConfig
from sim.scene import DRIVING_COMMANDS, STEP_S
from sim.state import STATE_SIZE, AgentSlice, AgentType, StateIndex
from sim.world_view import WorldView

HISTORY_INTERVAL_S = HISTORY_STRIDE * STEP_S  # NAVSIM's history: frames 0.5 s apart
ROUTE_LANE_ID = "route"
ROUTE_LANE_WIDTH_M = 3.5
ROUTE_BACK_M = 10.0  # the route lane starts this far behind its first waypoint, so the ego stands on it
DEFAULT_SPEED_LIMIT_MPS = 50 / 3.6  # when the runtime sends none (an urban limit)
#: The text a command gives a language-conditioned policy (the generator's words for its manoeuvres).
COMMAND_WORDS = {"left": COMMAND_TEXT["left"], "right": COMMAND_TEXT["right"], "straight": COMMAND_TEXT["follow"],
                 "unknown": COMMAND_TEXT["follow"]}


class ContractInputError(ValueError):
    """The session has not given what the served agent needs (no egomotion, no route, no camera frame yet)."""


def choose_camera(session: SessionState) -> str:
    """The declared camera a front-camera agent sees: w0sim's CAM_F0 if declared, else the one whose optical axis
    points most nearly forward in the rig."""
    if FRONT_CAMERA_ID in session.cameras:
        return FRONT_CAMERA_ID
    if not session.cameras:
        raise ContractInputError("the session declared no camera")

    def forwardness(logical_id: str) -> float:
        rotation = Pose.from_proto(session.cameras[logical_id].rig_to_camera).rotation_matrix
        return float(rotation[0, 2])  # the rig's x component of the optical (z) axis

    return max(sorted(session.cameras), key=forwardness)


def contract_inputs(ctx: DriveContext, sensors: SensorConfig, privileged: bool, camera_id: str | None,
                    camera: CameraConfig = CameraConfig()) -> tuple[AgentInput, WorldView | None]:
    """The agent input (and world view, for a privileged agent) at `ctx.time_now_us` from the session."""
    session = ctx.session
    with session.lock:
        times = list(session.ego_trajectory.timestamps_us)
        poses = list(session.ego_trajectory.poses)
        states = list(session.dynamic_states)
        route = np.array(session.route_waypoints_in_rig, dtype=np.float64)
        frames = list(session.frame_history.get(camera_id, [])) if camera_id else []
        truth = session.ground_truth_in_rig
    if not poses:
        raise ContractInputError("no egomotion observation yet: submit_egomotion_observation before drive")
    wanted = [ctx.time_now_us - round(k * HISTORY_INTERVAL_S * 1e6) for k in range(sensors.history_frames - 1, -1, -1)]
    history = np.stack([_ego_state(times, poses, states, t) for t in wanted])
    command = _command(route)
    cameras = None
    if sensors.cameras:
        if not frames:
            raise ContractInputError(f"no frame of camera {camera_id!r} yet: submit_image_observation before drive")
        cameras = np.stack([_frame_at(frames, t, camera) for t in wanted])
    agent_input = build_agent_input(history, command, COMMAND_WORDS[DRIVING_COMMANDS[command]], cameras)
    if not privileged:
        return agent_input, None
    return agent_input, _route_world(ctx, history, times, poses, states, route, truth)


def _ego_state(times: list[int], poses: list[Pose], states: list, t: int) -> np.ndarray:
    """(11,) ego state in the local frame at time `t` (the nearest observation at or before it; the first one before
    the session's start)."""
    k = max(int(np.searchsorted(times, t, side="right")) - 1, 0)
    return _observed_state(poses[k], states[k] if k < len(states) else None)


def _observed_state(pose: Pose, dynamic) -> np.ndarray:
    """(11,) ego state of one egomotion observation: its pose and, when it came with one, its dynamic state."""
    state = np.zeros(STATE_SIZE)
    state[:3] = xy_heading(pose)
    if dynamic is not None:
        state[[StateIndex.VELOCITY_X, StateIndex.VELOCITY_Y]] = dynamic.linear_velocity.x, dynamic.linear_velocity.y
        state[[StateIndex.ACCELERATION_X, StateIndex.ACCELERATION_Y]] = (dynamic.linear_acceleration.x,
                                                                           dynamic.linear_acceleration.y)
        state[StateIndex.ANGULAR_VELOCITY] = dynamic.angular_velocity.z
    return state


def _command(route_in_rig: np.ndarray) -> int:
    """NAVSIM's driving command for an ego at the rig origin; unknown without a route."""
    if len(route_in_rig) < 2:
        return DRIVING_COMMANDS.index("unknown")
    points = route_in_rig[:, :2]
    cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    nearest = int(np.argmin(np.hypot(points[:, 0], points[:, 1])))
    return command_at(points, cumulative, cumulative[nearest], np.zeros(3))


def _frame_at(frames: list[CameraFrame], t: int, camera: CameraConfig) -> np.ndarray:
    """The newest frame at or before `t` (the oldest one kept before it), as w0sim's camera frames: the middle of the
    image at the camera's aspect ratio, resized to its resolution."""
    stamps = [f.timestamp_us for f in frames]
    frame = frames[max(int(np.searchsorted(stamps, t, side="right")) - 1, 0)]
    rgb = frame.as_array()
    h, w = rgb.shape[:2]
    aspect = camera.width / camera.height
    if w / h > aspect:  # wider than ours: keep the middle columns
        keep = int(round(h * aspect))
        rgb = rgb[:, (w - keep) // 2: (w - keep) // 2 + keep]
    else:
        keep = int(round(w / aspect))
        rgb = rgb[(h - keep) // 2: (h - keep) // 2 + keep]
    return cv2.resize(np.ascontiguousarray(rgb), (camera.width, camera.height), interpolation=cv2.INTER_AREA)


def _route_world(ctx: DriveContext, history: np.ndarray, times: list[int], poses: list[Pose], states: list,
                 route_in_rig: np.ndarray, truth: RigTrajectory | None) -> WorldView:
    """A world view from the contract: one lane along the route, CARLA's actors when the runtime sends them, and as
    the ego's log the recorded ground truth when the runtime sends it (what log replay drives), else the ego's
    observed past."""
    if len(route_in_rig) < 2:
        raise ContractInputError("no route yet: a privileged agent plans along the route (submit_route before drive)")
    current = pose_of(*history[-1, :3])
    centerline = current.transform_points(np.column_stack([route_in_rig[:, :2], np.zeros(len(route_in_rig))]))[:, :2]
    kept = [centerline[0]]
    for point in centerline[1:]:  # waypoints closer than 1 mm to the last one kept add nothing
        if np.linalg.norm(point - kept[-1]) > 1e-3:
            kept.append(point)
    if len(kept) < 2:
        raise ContractInputError("the route's waypoints all lie on one point")
    centerline = np.array(kept)
    back = centerline[0] - centerline[1]
    centerline = np.vstack([centerline[0] + back / np.linalg.norm(back) * ROUTE_BACK_M, centerline])
    left, right = _boundaries(centerline, ROUTE_LANE_WIDTH_M / 2)
    data = ctx.renderer_data
    speed_limit = data.speed_limit_mps if data is not None and data.speed_limit_mps > 0 else DEFAULT_SPEED_LIMIT_MPS
    lane = Lane(ROUTE_LANE_ID, centerline, left, right, float(speed_limit), ROUTE_LANE_ID)
    road_map = RoadMap([lane], [Area(ROUTE_LANE_ID, "roadblock", lane.polygon())], name="egodriver-route")
    if truth is not None and len(truth) > 0:
        ego_log, step = _recorded_log(history[-1], current, truth, ctx.time_now_us), 0
    else:  # every observation so far, each once (its dynamic state where it came with one)
        ego_log = np.stack([_observed_state(pose, states[k] if k < len(states) else None)
                            for k, pose in enumerate(poses)])
        step = len(poses) - 1
    return WorldView(road_map, [ROUTE_LANE_ID], history[-1].copy(), _actors(data), None, 0.0, [],
                     np.zeros(0, dtype=np.int8), ego_log, step, ctx.time_now_us * 1e-6)


def _boundaries(centerline: np.ndarray, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Left and right lane boundaries `half_width` off a polyline: each point moved along the bisector of its two
    segments' normals, mitred so that it stays `half_width` from both (at most 5 x on a hairpin)."""
    segments = np.diff(centerline, axis=0)
    segments /= np.linalg.norm(segments, axis=1, keepdims=True)
    segment_normals = np.column_stack([-segments[:, 1], segments[:, 0]])
    before = np.vstack([segment_normals[:1], segment_normals])  # the normal of the segment ending at each point
    after = np.vstack([segment_normals, segment_normals[-1:]])
    bisector = before + after
    bisector /= np.maximum(np.linalg.norm(bisector, axis=1, keepdims=True), 1e-12)
    miter = 1.0 / np.maximum(np.sum(bisector * before, axis=1, keepdims=True), 0.2)
    offset = half_width * miter * bisector
    return centerline + offset, centerline - offset


def _recorded_log(now: np.ndarray, current: Pose, truth: RigTrajectory, time_now_us: int) -> np.ndarray:
    """(T, 11) the ego's state now, then the recorded ground truth (rig frame, the current pose's) at 10 Hz from
    now on, in the local frame."""
    step_us = round(STEP_S * 1e6)
    ahead = range(time_now_us + step_us, truth.timestamps_us[-1] + 1, step_us)
    log = np.zeros((1 + len(ahead), STATE_SIZE))
    log[0] = now
    for k, t in enumerate(ahead, start=1):
        log[k, :3] = xy_heading(current @ truth.interpolate(t))
    return log


def _actors(data) -> AgentSlice:
    """CARLA's actors (carla mode's renderer data) as w0sim objects in the local frame; none without it."""
    actors = list(data.actors) if data is not None else []
    rows = []
    for actor in actors:
        pose = Pose.from_proto(actor.pose_local_to_aabb)
        x, y, heading = xy_heading(pose)
        v = actor.dynamic_state.linear_velocity
        vx, vy = np.cos(heading) * v.x - np.sin(heading) * v.y, np.sin(heading) * v.x + np.cos(heading) * v.y
        kind = AgentType.PEDESTRIAN if actor.type_id.startswith("walker") else AgentType.VEHICLE
        rows.append((x, y, heading, vx, vy, actor.aabb.size_x, actor.aabb.size_y, actor.aabb.size_z, kind))
    table = np.array(rows, dtype=np.float64).reshape(-1, 9)
    return AgentSlice(x=table[:, 0], y=table[:, 1], heading=table[:, 2], vx=table[:, 3], vy=table[:, 4],
                      valid=np.ones(len(rows), dtype=bool), length=table[:, 5], width=table[:, 6], height=table[:, 7],
                      agent_type=table[:, 8].astype(np.int8), track_ids=[a.track_id for a in actors])


__all__ = ["COMMAND_WORDS", "ContractInputError", "choose_camera", "contract_inputs"]
