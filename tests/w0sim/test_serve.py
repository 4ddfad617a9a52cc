"""`w0sim serve`'s servicer in this process: what it describes, how it takes exact inputs and gives plans back, and the
errors a client gets for what it did wrong."""
from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from carla_driver_interface.contract import contract_metadata
from carla_driver_interface.driver import SessionState
from carla_driver_interface.geometry import Pose
from carla_driver_interface.geometry import Trajectory as RigTrajectory
from carla_driver_interface.protocol import (
    DriveRequest,
    DriveSessionCloseRequest,
    DriveSessionRequest,
    EgodriverServiceStub,
    RolloutEgoTrajectory,
)

from agents.base import Agent, AgentError, SensorConfig
from agents.egodriver_wire import (
    DESCRIBE_METHOD,
    PLAN_METHOD,
    SUBMIT_METHOD,
    decode_plan,
    encode_inputs,
    encode_plan_request,
    front_camera,
)
from scenarios.generator import generate_scene
from sim.envs.navsim_env import NavsimSceneEnv
from sim.state import Trajectory
from w0sim.serve import AgentDriver, policy, serving

PLAN = np.array([[0.5 * k, 0.01 * k, 0.001 * k] for k in range(1, 9)])


class Recorder(Agent):
    """Plans PLAN and keeps what it was given."""

    privileged = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def compute_trajectory(self, agent_input, world=None):
        self.seen.append((agent_input, world))
        return Trajectory(PLAN.copy())


class CameraRecorder(Recorder):
    privileged = False

    def get_sensor_config(self):
        return SensorConfig(cameras=True)


@pytest.fixture
def served():
    """(stub, channel, agent) of a Recorder served in this process."""
    agent = Recorder()
    with serving(agent, "recorder", host="localhost", port=0) as address:
        with grpc.insecure_channel(address) as channel:
            yield EgodriverServiceStub(channel), channel, agent


def _start(stub, uuid: str = "s1", cameras=()) -> None:
    request = DriveSessionRequest(session_uuid=uuid)
    request.rollout_spec.vehicle.available_cameras.extend(cameras)
    stub.start_session(request, timeout=10, metadata=contract_metadata())


def _egomotion(stub, uuid: str, time_us: int, pose: Pose) -> None:
    message = RolloutEgoTrajectory(session_uuid=uuid)
    message.trajectory.CopyFrom(RigTrajectory([time_us], [pose]).to_proto())
    stub.submit_egomotion_observation(message, timeout=10)


def _inputs():
    env = NavsimSceneEnv(scenes=[generate_scene("straight", 3)], cameras=False, privileged=True)
    _, info = env.reset(seed=0)
    return info["agent_input"], info["world"]


def test_describe_says_what_the_agent_needs(served):
    _, channel, _ = served
    assert json.loads(channel.unary_unary(DESCRIBE_METHOD)(b"", timeout=10)) == {
        "agent": "recorder", "privileged": True, "cameras": False, "history_frames": 4, "num_poses": 8,
        "interval_s": 0.5, "w0sim": "0.1.0"}


def test_a_drive_with_submitted_inputs_plans_on_them_and_its_plan_comes_back_exact_and_timed(served):
    stub, channel, agent = served
    agent_input, world = _inputs()
    _start(stub)
    anchor = Pose.from_xyz_yaw(3.0, -2.0, 0.0, 0.4)
    _egomotion(stub, "s1", 2_000_000, anchor)
    channel.unary_unary(SUBMIT_METHOD)(encode_inputs("s1", 2_000_000, agent_input, world, True), timeout=10)
    response = stub.drive(DriveRequest(session_uuid="s1", time_now_us=2_000_000, time_query_us=2_500_000), timeout=10)
    ((seen_input, seen_world),) = agent.seen
    assert seen_input == agent_input and np.array_equal(seen_world.ego_state, world.ego_state)
    assert seen_world.route == world.route and len(seen_world.road_map.lanes) == len(world.road_map.lanes)
    plan = RigTrajectory.from_proto(response.trajectory)
    # The contract's plan: the anchor at now, then the 8 poses 0.5 s apart in the local frame (float32 on the wire).
    assert plan.timestamps_us == [2_000_000 + 500_000 * k for k in range(9)]
    local = np.array([[p.position[0], p.position[1]] for p in plan.poses[1:]])
    expected = [anchor.transform_points([[x, y, 0.0]])[0, :2] for x, y, _ in PLAN]
    np.testing.assert_allclose(local, expected, rtol=0, atol=1e-5)
    exact = decode_plan(channel.unary_unary(PLAN_METHOD)(encode_plan_request("s1", 2_000_000), timeout=10))
    np.testing.assert_array_equal(exact, PLAN)


def _one_exact_drive(stub, channel) -> bytes:
    """Session s1: egomotion, exact inputs and a drive at t = 0; Submit's answer."""
    agent_input, world = _inputs()
    _start(stub)
    _egomotion(stub, "s1", 0, Pose.identity())
    answer = channel.unary_unary(SUBMIT_METHOD)(encode_inputs("s1", 0, agent_input, world, True), timeout=10)
    stub.drive(DriveRequest(session_uuid="s1", time_now_us=0, time_query_us=500_000), timeout=10)
    return answer


def test_a_session_that_submitted_inputs_gets_an_error_for_a_drive_without_them(served):
    stub, channel, agent = served
    _one_exact_drive(stub, channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.drive(DriveRequest(session_uuid="s1", time_now_us=500_000, time_query_us=1_000_000), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    assert ("session s1 submitted w0sim's exact inputs before, but none for the drive at 500000 us"
            in err.value.details())
    assert len(agent.seen) == 1


@pytest.mark.parametrize("method, payload, code, details", [
    (SUBMIT_METHOD, b"junk", grpc.StatusCode.INVALID_ARGUMENT,
     "Submit payload is not a w0sim inputs archive (BadZipFile: File is not a zip file)"),
    (PLAN_METHOD, b"{}", grpc.StatusCode.INVALID_ARGUMENT,
     "Plan request is not {session, time_now_us} JSON (KeyError: 'session')"),
    (PLAN_METHOD, encode_plan_request("s1", 0), grpc.StatusCode.NOT_FOUND, "session s1 has no plan of a drive at 0 us"),
    (PLAN_METHOD, encode_plan_request("nobody", 0), grpc.StatusCode.NOT_FOUND,
     "session nobody has no plan of a drive at 0 us"),
])
def test_extension_calls_that_cannot_be_served_say_why(served, method, payload, code, details):
    stub, channel, _ = served
    _start(stub)
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(method)(payload, timeout=10)
    assert (err.value.code(), err.value.details()) == (code, details)


def test_inputs_for_an_unknown_session_are_refused(served):
    _, channel, _ = served
    agent_input, world = _inputs()
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(SUBMIT_METHOD)(encode_inputs("nobody", 0, agent_input, world, True), timeout=10)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "unknown session nobody")


def test_a_closed_session_forgets_its_inputs_and_plans(served):
    stub, channel, _ = served
    _one_exact_drive(stub, channel)
    stub.close_session(DriveSessionCloseRequest(session_uuid="s1"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(PLAN_METHOD)(encode_plan_request("s1", 0), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_camera_agent_sees_the_chosen_camera_and_a_session_without_one_is_refused():
    driver = AgentDriver(CameraRecorder(), "eyes")
    session = SessionState(uuid="u", seed=0, scene_id="", cameras={"CAM_F0": front_camera()})
    driver.on_session_start(session)
    assert driver._sessions["u"].camera_id == "CAM_F0"
    with pytest.raises(ValueError) as err:
        driver.on_session_start(SessionState(uuid="v", seed=0, scene_id="", cameras={}))
    assert str(err.value) == ("agent eyes drives from a front camera; the session declared none (declare one in "
                              "start_session's rollout_spec)")
    assert "v" not in driver._sessions


def test_the_policy_factory_builds_and_loads_the_named_agent():
    driver = policy("constant_velocity")
    assert isinstance(driver, AgentDriver) and driver.name == "constant_velocity"
    assert type(driver.agent).__name__ == "ConstantVelocityAgent"
    with pytest.raises(ValueError):
        policy("no_such_agent")


def test_the_policy_factory_serves_the_shipped_drivevla_w0_by_default_with_the_options_it_is_given():
    from agents.drivevla_w0 import DEFAULT_CHECKPOINT

    default = policy()
    assert (default.name, type(default.agent).__name__) == ("drivevla_w0", "DriveVLAW0Agent")
    agent = default.agent
    assert (agent.checkpoint, agent.seed, agent.device, str(agent.dtype), agent.model is not None) == (
        DEFAULT_CHECKPOINT, 0, "cpu", "torch.float32", True)
    seeded = policy("drivevla_w0", checkpoint=str(DEFAULT_CHECKPOINT), seed=7, dtype="bfloat16").agent
    assert (seeded.checkpoint, seeded.seed, str(seeded.dtype)) == (DEFAULT_CHECKPOINT, 7, "torch.bfloat16")
    with pytest.raises(AgentError) as err:
        policy("constant_velocity", checkpoint="somewhere")
    assert str(err.value) == ("agent ConstantVelocityAgent takes no checkpoint=somewhere (it is a numpy agent without "
                              "weights)")


class Float32Planner(Recorder):
    def compute_trajectory(self, agent_input, world=None):
        return Trajectory(PLAN.astype(np.float32))


def test_a_plan_of_float32_poses_comes_back_from_plan_as_float64():
    with serving(Float32Planner(), "f32", host="localhost", port=0) as address, grpc.insecure_channel(address) as channel:
        assert _one_exact_drive(EgodriverServiceStub(channel), channel) == b""
        exact = decode_plan(channel.unary_unary(PLAN_METHOD)(encode_plan_request("s1", 0), timeout=10))
    np.testing.assert_array_equal(exact, PLAN.astype(np.float32).astype(np.float64))


def test_a_session_start_is_logged_with_its_agent_and_camera(caplog):
    driver = AgentDriver(CameraRecorder(), "eyes")
    with caplog.at_level("INFO", logger="w0sim.serve"):
        driver.on_session_start(SessionState(uuid="u", seed=0, scene_id="", cameras={"CAM_F0": front_camera()}))
    assert caplog.messages == ["session u: agent eyes, camera CAM_F0"]
