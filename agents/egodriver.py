"""`--agent egodriver:HOST:PORT`: a policy served elsewhere over AlpaSim's egodriver contract, driving w0sim.

Each scene is one session: `start_session` declares w0sim's front camera (intrinsics and rig pose), and each
decision sends the ego's pose and dynamic state (in a `local` frame fixed at the session's first pose), the route
ahead (rig frame), the front camera frame (PNG), then `drive`; the timed plan that comes back is sampled at
NAVSIM's 8 poses 0.5 s apart. A w0sim server (`w0sim serve`) also gets the exact agent input and world view through
w0sim's extension (`agents.egodriver_wire`), and gives back the plan in float64, so a served agent scores as it would
in process.

Every call has a deadline (`service_timeout_s`) and is retried (`service_retries`) when the server is unavailable or
late; a server that still does not answer raises `AgentUnavailable`, a failed row the next run into the same folder
runs again. Any other error of the server is the agent's crash.
"""
from __future__ import annotations

import atexit
import io
import time
import uuid
import weakref

import grpc
import numpy as np
from carla_driver_interface.contract import CONTRACT_REVISION, camera_to_revision, contract_metadata, negotiate
from carla_driver_interface.geometry import Trajectory as RigTrajectory
from carla_driver_interface.geometry import waypoints_to_proto
from carla_driver_interface.protocol import (
    DriveRequest,
    DriveSessionCloseRequest,
    DriveSessionRequest,
    DynamicState,
    EgodriverServiceStub,
    RolloutCameraImage,
    RolloutEgoTrajectory,
    Route,
    RouteRequest,
    Vec3,
    channel_options,
    unpack_debug_info,
)
from PIL import Image

from agents.base import Agent, AgentError, AgentOptions, AgentUnavailable, SensorConfig, require_world
from agents.egodriver_wire import (
    DESCRIBE_METHOD,
    PLAN_METHOD,
    SUBMIT_METHOD,
    WireError,
    decode_plan,
    encode_inputs,
    encode_plan_request,
    front_camera,
    pose_of,
    read_description,
    xy_heading,
)
from agents.registry import SERVED_PREFIX
from sim.agent_input import AgentInput
from sim.geometry import global_to_local
from sim.state import StateIndex, Trajectory, TrajectorySampling
from sim.world_view import WorldView

DECISION_INTERVAL_US = 500_000  # ClosedLoop-v0 decides every 0.5 s: the time the runtime steps to
ROUTE_AHEAD_M = 200.0  # the route sent: from the ego's nearest route point to this far on
PLAN_TOLERANCE_M = 0.01  # float32 poses of a plan within a few km of the session's first pose round to less
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class EgodriverAgent(Agent):
    """A policy behind an egodriver server. Privileged, as the route it sends comes from the world view."""

    privileged = True

    def __init__(self, address: str, timeout_s: float = 30.0, retries: int = 2,
                 trajectory_sampling: TrajectorySampling = TrajectorySampling()):
        super().__init__(trajectory_sampling)
        if not address:
            raise AgentError("egodriver agent: give the server as egodriver:HOST:PORT or egodriver:unix:///PATH")
        if not timeout_s > 0 or retries < 0:
            raise AgentError(f"egodriver agent: service timeout must be > 0 s and retries >= 0, got {timeout_s} "
                             f"and {retries}")
        self.address, self.timeout_s, self.retries = address, float(timeout_s), int(retries)
        self._channel: grpc.Channel | None = None
        self._remote: dict | None = None  # Describe's answer (a w0sim server), {} for any other server
        self._revision = CONTRACT_REVISION
        self._session: str | None = None
        self._last_time_s = 0.0
        self._origin = np.zeros(3)
        self.last_inference_s: float | None = None
        atexit.register(_close_at_exit, weakref.ref(self))

    @classmethod
    def from_options(cls, options: AgentOptions = AgentOptions()) -> "EgodriverAgent":
        unused = [f"{k}={v}" for k, v in {"checkpoint": options.checkpoint, "device": options.device,
                                         "dtype": options.dtype}.items() if v != getattr(AgentOptions, k)]
        if unused:
            raise AgentError(f"egodriver agent takes no {', '.join(unused)}: give them to the server it drives")
        return cls(options.service or "", options.service_timeout_s, options.service_retries)

    def name(self) -> str:
        return f"{SERVED_PREFIX}{self.address}"

    # --- the server ---------------------------------------------------------------------------------------------

    def initialize(self) -> None:
        self._describe()

    def _stub(self) -> EgodriverServiceStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address, options=channel_options())
        return EgodriverServiceStub(self._channel)

    def _call(self, what: str, call, *args, absent_ok: bool = False, **kwargs):
        """`call(*args, timeout=..., **kwargs)` with retries; AgentUnavailable when the server never answers, None
        for a method the server does not have when `absent_ok`."""
        for attempt in range(self.retries + 1):
            try:
                return call(*args, timeout=self.timeout_s, **kwargs)
            except grpc.RpcError as err:
                code, details = err.code(), " ".join(str(err.details() or "").split())
                if code == grpc.StatusCode.UNIMPLEMENTED and absent_ok:
                    return None
                if code in RETRY_CODES and attempt < self.retries:
                    time.sleep(min(0.5 * 2 ** attempt, 5.0))
                    continue
                message = f"policy service {self.address}: {what} failed: {code.name}: {details or '(no details)'}"
                if code in RETRY_CODES:
                    raise AgentUnavailable(f"{message} (after {attempt + 1} tries, {self.timeout_s:g} s each)") from None
                raise AgentError(message) from None

    def _describe(self) -> dict:
        """What the server's agent needs (w0sim's extension); {} for a server without it. A channel opened only to
        ask is closed again: the process that starts a run asks, then forks its workers, which open their own."""
        if self._remote is None:
            stub = self._stub()
            _, self._revision = self._call("get_version", negotiate, stub)
            answer = self._call("w0sim Describe", self._channel.unary_unary(DESCRIBE_METHOD), b"", absent_ok=True)
            try:
                self._remote = {} if answer is None else read_description(answer)
            except WireError as err:
                raise AgentError(f"policy service {self.address}: {err}") from None
            if self._remote and (self._remote["num_poses"], self._remote["interval_s"]) != (
                    self.trajectory_sampling.num_poses, self.trajectory_sampling.interval):
                raise AgentError(f"policy service {self.address} plans {self._remote['num_poses']} poses "
                                 f"{self._remote['interval_s']} s apart; the evaluation scores {self.trajectory_sampling}")
            if self._session is None:
                self._channel.close()
                self._channel = None
        return self._remote

    def get_sensor_config(self) -> SensorConfig:
        remote = self._describe()
        if remote:
            return SensorConfig(cameras=remote["cameras"], history_frames=remote["history_frames"])
        return SensorConfig(cameras=True)  # a foreign server: it gets the front camera, as AlpaSim's drivers do

    # --- sessions -----------------------------------------------------------------------------------------------

    def _start_session(self, world: WorldView) -> None:
        self.close()
        stub = self._stub()
        self._session = str(uuid.uuid4())
        self._origin = world.ego_state[:3].copy()
        request = DriveSessionRequest(session_uuid=self._session, random_seed=0)
        request.debug_info.scene_id = f"w0sim:{world.road_map.name}"
        if self.get_sensor_config().cameras:
            request.rollout_spec.vehicle.available_cameras.append(
                camera_to_revision(front_camera(), CONTRACT_REVISION, self._revision))
        self._call("start_session", stub.start_session, request, metadata=contract_metadata(self._revision))

    def close(self) -> None:
        """Close the open session, if any (best effort: a dead server has nothing to close)."""
        session, self._session = self._session, None
        if session is not None and self._channel is not None:
            try:
                self._stub().close_session(DriveSessionCloseRequest(session_uuid=session), timeout=self.timeout_s)
            except grpc.RpcError:
                pass

    # --- the decision --------------------------------------------------------------------------------------------

    def compute_trajectory(self, agent_input: AgentInput, world: WorldView | None = None) -> Trajectory:
        world = require_world(self, world)
        remote = self._describe()
        # A new scene is a new session: the environment's time starts again (every scene starts at 0 s).
        first = self._session is None or world.time_s <= self._last_time_s
        if first:
            self._start_session(world)
        self._last_time_s = world.time_s
        now_us = int(round(world.time_s * 1e6))
        stub = self._stub()
        ego = pose_of(*global_to_local(world.ego_state[None, :3], self._origin)[0])
        self._send_egomotion(stub, now_us, ego, world.ego_state)
        self._send_route(stub, now_us, world)
        if remote:
            self._call("w0sim Submit", self._channel.unary_unary(SUBMIT_METHOD), encode_inputs(
                self._session, now_us, agent_input, world if remote["privileged"] else None, first))
        elif agent_input.cameras is not None:
            self._send_frame(stub, now_us, agent_input.cameras[-1])
        response = self._call("drive", stub.drive, DriveRequest(session_uuid=self._session, time_now_us=now_us,
                                                                 time_query_us=now_us + DECISION_INTERVAL_US))
        debug = unpack_debug_info(response.debug_info.unstructured_debug_info)  # None from a server that says nothing
        self.last_inference_s = float(debug.inference_seconds) if debug is not None else None
        plan = RigTrajectory.from_proto(response.trajectory).transform(ego.inverse())
        poses = self._sample(plan, now_us)
        if remote:  # the same plan in float64 (the contract's poses are float32)
            exact = self._call("w0sim Plan", self._channel.unary_unary(PLAN_METHOD),
                               encode_plan_request(self._session, now_us))
            try:
                exact = decode_plan(exact)
            except WireError as err:
                raise AgentError(f"policy service {self.address}: {err}") from None
            if exact.shape != poses.shape or not np.allclose(exact, poses, rtol=0.0, atol=PLAN_TOLERANCE_M):
                raise AgentError(f"policy service {self.address}: its exact plan (w0sim Plan) differs from the plan "
                                 f"its drive returned by more than {PLAN_TOLERANCE_M} m")
            poses = exact
        return Trajectory(poses, self.trajectory_sampling)

    def _send_egomotion(self, stub, now_us: int, ego, state: np.ndarray) -> None:
        message = RolloutEgoTrajectory(session_uuid=self._session)
        message.trajectory.CopyFrom(RigTrajectory([now_us], [ego]).to_proto())
        message.dynamic_states.append(DynamicState(
            linear_velocity=Vec3(x=state[StateIndex.VELOCITY_X], y=state[StateIndex.VELOCITY_Y], z=0.0),
            linear_acceleration=Vec3(x=state[StateIndex.ACCELERATION_X], y=state[StateIndex.ACCELERATION_Y], z=0.0),
            angular_velocity=Vec3(x=0.0, y=0.0, z=state[StateIndex.ANGULAR_VELOCITY])))
        self._call("submit_egomotion_observation", stub.submit_egomotion_observation, message)

    def _send_route(self, stub, now_us: int, world: WorldView) -> None:
        """The route ahead in the rig frame: from the ego's nearest route point on, ROUTE_AHEAD_M long."""
        line = world.road_map.route_polyline(world.route) if world.route else np.zeros((0, 2))
        if len(line):
            local = global_to_local(np.column_stack([line, np.zeros(len(line))]), world.ego_state[:3])[:, :2]
            start = int(np.argmin(np.hypot(local[:, 0], local[:, 1])))
            along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(local[start:], axis=0), axis=1))])
            line = local[start:][along <= ROUTE_AHEAD_M]
        waypoints = np.column_stack([line, np.zeros(len(line))])
        self._call("submit_route", stub.submit_route, RouteRequest(
            session_uuid=self._session, route=Route(timestamp_us=now_us, waypoints=waypoints_to_proto(waypoints))))

    def _send_frame(self, stub, now_us: int, rgb: np.ndarray) -> None:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
        message = RolloutCameraImage(session_uuid=self._session)
        image = message.camera_image
        image.logical_id, image.frame_start_us, image.frame_end_us = front_camera().logical_id, now_us, now_us
        image.image_bytes = buffer.getvalue()
        self._call("submit_image_observation", stub.submit_image_observation, message)

    def _sample(self, plan: RigTrajectory, now_us: int) -> np.ndarray:
        """(num_poses, 3) poses of a rig-frame plan at NAVSIM's times; an empty plan holds the ego where it is."""
        sampling = self.trajectory_sampling
        if len(plan) == 0:
            return np.zeros((sampling.num_poses, 3))
        stamps = list(plan.timestamps_us)
        out = []
        for i in range(sampling.num_poses):
            t = now_us + round((i + 1) * sampling.interval * 1e6)
            if t > stamps[-1]:
                raise AgentError(f"policy service {self.address} planned {(stamps[-1] - now_us) / 1e6:g} s ahead; the "
                                 f"evaluation scores {sampling.time_horizon:g} s")
            pose = plan.poses[stamps.index(t)] if t in stamps else plan.interpolate(t)
            out.append(xy_heading(pose))
        return np.array(out)


def _close_at_exit(ref) -> None:
    agent = ref()
    if agent is not None:
        agent.close()


__all__ = ["EgodriverAgent"]
