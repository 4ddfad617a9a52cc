"""`w0sim serve`: any w0sim agent as a policy service on AlpaSim's egodriver contract (through carla-driver-interface).

`AgentDriver` is a `carla_driver_interface.driver.BaseDriver`: the package's servicer keeps the sessions, frames,
egomotion and route, and converts the plan from the rig frame to the contract's `local` frame. Per `drive` the agent
gets either the exact inputs a w0sim client submitted through w0sim's extension service (`agents.egodriver_wire`),
or inputs built from the contract alone (`w0sim.contract_inputs`); the extension also gives a w0sim client the plan
in float64 (the contract's poses are float32). A session that cannot give the agent what it needs (a camera agent in
a session that declares no camera) is refused at `start_session`.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np
from carla_driver_interface.driver import BaseDriver, DriveContext, DriveResult, SessionState
from carla_driver_interface.geometry import Trajectory as RigTrajectory
from carla_driver_interface.server import bind_address, build_server

import w0sim
from agents.base import Agent
from agents.egodriver_wire import (
    DESCRIBE_METHOD,
    EXTENSION_SERVICE,
    PLAN_METHOD,
    SUBMIT_METHOD,
    SessionWorld,
    WireError,
    decode_inputs,
    decode_plan_request,
    describe,
    encode_plan,
    pose_of,
)
from w0sim.contract_inputs import ContractInputError, choose_camera, contract_inputs

logger = logging.getLogger(__name__)

#: Camera frames kept per session: 2 s of history at 10 Hz, enough for NAVSIM's 1.5 s.
FRAME_HISTORY = 21


@dataclass
class _Session:
    camera_id: str | None
    exact: bool = False  # a w0sim client: every drive must have its submitted inputs
    world: SessionWorld | None = None
    submitted: dict[int, tuple] = field(default_factory=dict)  # time_now_us -> (agent input, world view)
    planned: dict[int, np.ndarray] = field(default_factory=dict)  # time_now_us -> the last drive's plan (float64)


class AgentDriver(BaseDriver):
    """A w0sim agent behind the egodriver contract; its plan goes back as timed rig-frame poses."""

    frame_history_length = FRAME_HISTORY

    def __init__(self, agent: Agent, name: str):
        self.agent, self.name = agent, name
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()  # sessions
        self._planning = threading.Lock()  # an agent (a torch model) plans one decision at a time

    # --- what the agent needs -----------------------------------------------------------------------------------

    def description(self) -> bytes:
        sensors = self.agent.get_sensor_config()
        return describe(self.name, self.agent.privileged, sensors.cameras, sensors.history_frames,
                        self.agent.trajectory_sampling, w0sim.__version__)

    def on_session_start(self, session: SessionState) -> None:
        camera_id = None
        if self.agent.get_sensor_config().cameras:
            try:
                camera_id = choose_camera(session)
            except ContractInputError:
                raise ValueError(f"agent {self.name} drives from a front camera; the session declared none "
                                 f"(declare one in start_session's rollout_spec)") from None
        with self._lock:
            self._sessions[session.uuid] = _Session(camera_id)
        logger.info("session %s: agent %s, camera %s", session.uuid, self.name, camera_id)

    def on_session_close(self, session: SessionState) -> None:
        with self._lock:
            self._sessions.pop(session.uuid, None)

    # --- w0sim's extension: the exact inputs ----------------------------------------------------------------------

    def submit(self, payload: bytes, context: grpc.ServicerContext) -> bytes:
        """`w0sim.v1.AgentInputs/Submit`: the exact inputs of the session's next drive."""
        try:
            header, agent_input, world, session_world = decode_inputs(payload, self._session_world)
        except WireError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        with self._lock:
            session = self._sessions.get(header["session"])
            if session is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown session {header['session']}")
            session.exact, session.world = True, session_world
            session.submitted = {header["time_now_us"]: (agent_input, world)}
        return b""

    def plan(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """`w0sim.v1.AgentInputs/Plan`: the plan the session's drive at a time returned, as float64 ego-frame poses."""
        try:
            uuid, time_now_us = decode_plan_request(request)
        except WireError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        with self._lock:
            session = self._sessions.get(uuid)
            poses = None if session is None else session.planned.get(time_now_us)
        if poses is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"session {uuid} has no plan of a drive at {time_now_us} us")
        return encode_plan(poses)

    def _session_world(self, uuid: str) -> SessionWorld | None:
        with self._lock:
            found = self._sessions.get(uuid)
            return None if found is None else found.world

    # --- the decision ----------------------------------------------------------------------------------------------

    def drive(self, ctx: DriveContext) -> DriveResult:
        with self._lock:
            session = self._sessions.get(ctx.session.uuid)
            exact = session.submitted.pop(ctx.time_now_us, None) if session is not None else None
        if exact is None and session is not None and session.exact:  # never half exact, half from the contract
            raise ContractInputError(f"session {ctx.session.uuid} submitted w0sim's exact inputs before, but none for "
                                     f"the drive at {ctx.time_now_us} us")
        if exact is None:
            sensors = self.agent.get_sensor_config()
            exact = contract_inputs(ctx, sensors, self.agent.privileged, session.camera_id if session else None)
        agent_input, world = exact
        with self._planning:
            trajectory = self.agent.compute_trajectory(agent_input, world)
        if session is not None:
            with self._lock:
                session.planned = {ctx.time_now_us: np.array(trajectory.poses, dtype=np.float64)}
        interval_us = round(trajectory.sampling.interval * 1e6)
        plan = RigTrajectory.empty()
        for i, (x, y, heading) in enumerate(trajectory.poses):
            plan.append(ctx.time_now_us + (i + 1) * interval_us, pose_of(x, y, heading))
        return DriveResult(trajectory_in_rig=plan)


def agent_to_serve(agent: str, checkpoint: str | None = None, device: str = "cpu", dtype: str = "float32",
                   seed: int = 0) -> Agent:
    """The agent named `agent`, built from these options, checked as an evaluation checks it, and loaded."""
    from agents.base import AgentOptions
    from agents.registry import AgentSpec
    from w0sim.runner import check_agent, initialized

    spec = AgentSpec(agent, AgentOptions(checkpoint, seed, device, dtype))
    built = spec.build()
    check_agent(built, spec)
    return initialized(built)


def policy(agent: str = "drivevla_w0", checkpoint: str | None = None, device: str = "cpu", dtype: str = "float32",
           seed: int = 0) -> AgentDriver:
    """A w0sim agent as a carla-driver-interface policy, built and loaded: what `carla-driver-interface serve --policy
    w0sim.serve:policy --policy-arg agent=NAME` (and the AlpaSim images it builds) serve. Contract inputs only: that
    server does not serve w0sim's extension (`w0sim serve` does)."""
    return AgentDriver(agent_to_serve(agent, checkpoint, device, dtype, seed), agent)


def extension_handler(driver: AgentDriver) -> grpc.GenericRpcHandler:
    """w0sim's extension service (raw bytes in and out) for `driver`."""
    return grpc.method_handlers_generic_handler(EXTENSION_SERVICE, {
        DESCRIBE_METHOD.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(lambda _, __: driver.description()),
        SUBMIT_METHOD.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(driver.submit),
        PLAN_METHOD.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(driver.plan),
    })


@contextmanager
def serving(agent: Agent, name: str, host: str = "localhost", port: int = 50051, mode: str = "carla",
            max_workers: int = 8):
    """Serve `agent` (initialised) for the duration of the block; yields the address clients dial."""
    driver = AgentDriver(agent, name)
    server, bound = build_server(driver, port=port, host=host, max_workers=max_workers, mode=mode)
    server.add_generic_rpc_handlers((extension_handler(driver),))
    server.start()
    address = bind_address("localhost" if host in ("0.0.0.0", "::", "") else host, bound)
    try:
        yield address
    finally:
        server.stop(grace=1.0).wait()


__all__ = ["AgentDriver", "FRAME_HISTORY", "agent_to_serve", "extension_handler", "policy", "serving"]
