"""The egodriver agent: how it is named and built, how a served plan becomes NAVSIM's 8 poses, and what it sends a
w0sim server and any other server in this process."""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import replace

import grpc
import numpy as np
import pytest
from carla_driver_interface.driver import BaseDriver, DriveResult
from carla_driver_interface.geometry import Pose
from carla_driver_interface.geometry import Trajectory as RigTrajectory
from carla_driver_interface.protocol import DriveRequest
from carla_driver_interface.server import build_server

from agents.base import Agent, AgentError, AgentOptions, AgentUnavailable, SensorConfig
from agents.egodriver import EgodriverAgent, _close_at_exit
from agents.egodriver_wire import encode_plan, front_camera, xy_heading
from agents.registry import SERVED_AGENT, AgentSpec, resolve_agent
from scenarios.generator import generate_scene
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.geometry import global_to_local
from sim.state import StateIndex, Trajectory, TrajectorySampling
from w0sim.serve import AgentDriver, extension_handler, serving


def test_a_served_policy_is_named_by_its_address_and_built_with_the_service_options():
    spec = AgentSpec("egodriver:unix:///run/policy.sock", AgentOptions(service_timeout_s=4.0, service_retries=0))
    assert (resolve_agent(spec.name), spec.target, spec.options.service) == (
        SERVED_AGENT, SERVED_AGENT, "unix:///run/policy.sock")
    agent = spec.build()
    assert (type(agent), agent.address, agent.timeout_s, agent.retries, agent.name()) == (
        EgodriverAgent, "unix:///run/policy.sock", 4.0, 0, "egodriver:unix:///run/policy.sock")
    assert agent.privileged


@pytest.mark.parametrize("options, message", [
    (AgentOptions(checkpoint="ckpt"), "egodriver agent takes no checkpoint=ckpt: give them to the server it drives"),
    (AgentOptions(device="cuda", dtype="bfloat16"),
     "egodriver agent takes no device=cuda, dtype=bfloat16: give them to the server it drives"),
])
def test_model_options_belong_to_the_server(options, message):
    with pytest.raises(AgentError) as err:
        AgentSpec("egodriver:localhost:5", options).build()
    assert str(err.value) == message


@pytest.mark.parametrize("address, timeout, retries, message", [
    ("", 1.0, 0, "egodriver agent: give the server as egodriver:HOST:PORT or egodriver:unix:///PATH"),
    ("h:1", 0.0, 0, "egodriver agent: service timeout must be > 0 s and retries >= 0, got 0.0 and 0"),
    ("h:1", 1.0, -1, "egodriver agent: service timeout must be > 0 s and retries >= 0, got 1.0 and -1"),
])
def test_a_bad_address_timeout_or_retry_count_is_refused(address, timeout, retries, message):
    with pytest.raises(AgentError) as err:
        EgodriverAgent(address, timeout, retries)
    assert str(err.value) == message


def test_service_options_are_refused_by_an_agent_that_is_not_served():
    with pytest.raises(AgentError) as err:
        AgentSpec("constant_velocity", AgentOptions(service_retries=5)).build()
    assert str(err.value) == ("agent ConstantVelocityAgent takes no service_retries=5 (it is a numpy agent without "
                              "weights)")


def _plan(times_s: list[float], poses: list[tuple[float, float, float]], now_us: int = 3_000_000) -> RigTrajectory:
    return RigTrajectory([now_us + round(t * 1e6) for t in times_s],
                         [Pose.from_xyz_yaw(x, y, 0.0, h) for x, y, h in poses])


def test_a_plan_at_navsims_times_is_taken_pose_for_pose():
    expected = np.array([[2.0 * k, 0.1 * k, 0.01 * k] for k in range(1, 9)])
    sampled = EgodriverAgent("h:1")._sample(_plan([0.0] + [0.5 * k for k in range(1, 9)],
                                                  [(0.0, 0.0, 0.0)] + [tuple(p) for p in expected]), 3_000_000)
    np.testing.assert_allclose(sampled, expected, rtol=0, atol=1e-12)


def test_a_plan_on_another_grid_is_interpolated_at_navsims_times():
    """A plan every 0.3 s at 4 m/s turning at 0.1 rad/s: NAVSIM's pose k is the plan's pose at (k + 1) x 0.5 s, most
    of them between two of the plan's poses."""
    times = [0.3 * k for k in range(1, 15)]
    sampled = EgodriverAgent("h:1")._sample(_plan(times, [(4.0 * t, 0.0, 0.1 * t) for t in times]), 3_000_000)
    expected = np.array([(2.0 * k, 0.0, 0.05 * k) for k in range(1, 9)])
    np.testing.assert_allclose(sampled, expected, rtol=0, atol=1e-9)


def test_a_plan_shorter_than_four_seconds_crashes_the_agent_and_an_empty_one_holds_still():
    agent = EgodriverAgent("h:1")
    with pytest.raises(AgentError) as err:
        agent._sample(_plan([0.5 * k for k in range(1, 7)], [(k, 0.0, 0.0) for k in range(1, 7)]), 3_000_000)
    assert str(err.value) == "policy service h:1 planned 3 s ahead; the evaluation scores 4 s"
    np.testing.assert_array_equal(agent._sample(RigTrajectory.empty(), 3_000_000), np.zeros((8, 3)))


# ---- against a server in this process ----------------------------------------------------------------------------

PLAN = np.array([[0.5 * k, 0.02 * k, 0.002 * k] for k in range(1, 9)])


class Recorder(Agent):
    """Plans PLAN (in its ego frame) and keeps what it was given."""

    privileged = True

    def __init__(self, cameras: bool = False):
        super().__init__()
        self.cameras, self.seen = cameras, []

    def get_sensor_config(self):
        return SensorConfig(cameras=self.cameras)

    def compute_trajectory(self, agent_input, world=None):
        self.seen.append((agent_input, world))
        return Trajectory(PLAN.copy())


@contextmanager
def contract_only_server(agent: Agent):
    """`agent` behind carla-driver-interface's own server, without w0sim's extension (as any other server)."""
    server, port = build_server(AgentDriver(agent, "recorder"), port=0, host="localhost")
    server.start()
    try:
        yield f"localhost:{port}"
    finally:
        server.stop(grace=None)


def _closed_loop_decisions(count: int) -> list:
    env = ClosedLoopEnv(scenes=[generate_scene("curve", 2)], cameras=True, privileged=True)
    _, info = env.reset(seed=0)
    out = []
    for _ in range(count):
        out.append((info["agent_input"], info["world"]))
        _, _, _, _, info = env.step(np.array([[1.0 * k, 0.0, 0.0] for k in range(1, 9)]))
    return out


def test_against_a_w0sim_server_the_agent_gets_the_exact_inputs_and_its_plan_comes_back_exact():
    decisions = _closed_loop_decisions(3)
    agent = Recorder()
    with serving(agent, "recorder", host="localhost", port=0) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        client.initialize()
        assert client.get_sensor_config() == SensorConfig(cameras=False)
        plans = [client.compute_trajectory(agent_input, world).poses for agent_input, world in decisions]
        session = client._session
        client.compute_trajectory(*decisions[0])  # time went back: a new scene, a new session
        assert client._session != session
        client.close()
    assert all(np.array_equal(plan, PLAN) for plan in plans)
    assert client.last_inference_s is not None and client.last_inference_s > 0
    for (sent_input, sent_world), (seen_input, seen_world) in zip(decisions, agent.seen):
        assert seen_input == sent_input
        assert (seen_world.step, seen_world.time_s, seen_world.route) == (sent_world.step, sent_world.time_s,
                                                                           sent_world.route)
        assert np.array_equal(seen_world.agents.x, sent_world.agents.x)


def test_against_any_other_server_the_agent_sends_the_contracts_inputs_and_samples_its_plan():
    decisions = _closed_loop_decisions(2)
    agent = Recorder(cameras=True)
    with contract_only_server(agent) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        assert client.get_sensor_config() == SensorConfig(cameras=True)  # what a foreign server gets by default
        plans = [client.compute_trajectory(*decision).poses for decision in decisions]
        client.close()
    # float32 on the wire, in a local frame a few metres from the session's first pose
    assert all(np.allclose(plan, PLAN, rtol=0, atol=1e-5) for plan in plans)
    assert client.last_inference_s is not None  # carla mode reports the server's own time
    (first_input, first_world), (second_input, _) = agent.seen
    # From the contract: the front camera at 256 x 128 (PNG, lossless), the ego at the origin of its own frame,
    # one route lane, the command from the route.
    np.testing.assert_array_equal(second_input.cameras[-1], decisions[1][0].cameras[-1])
    np.testing.assert_allclose(first_input.ego_poses[-1], [0.0, 0.0, 0.0], atol=1e-6)
    assert first_world.route == ["route"] and len(first_world.road_map.lanes) == 1


def test_an_unreachable_server_is_agent_unavailable_after_the_retries_and_another_error_is_the_agents():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    client = EgodriverAgent(f"localhost:{port}", timeout_s=2, retries=1)
    with pytest.raises(AgentUnavailable) as err:
        client.initialize()
    assert str(err.value).startswith(f"policy service localhost:{port}: get_version failed: UNAVAILABLE: ")
    assert str(err.value).endswith(" (after 2 tries, 2 s each)")
    decisions = _closed_loop_decisions(1)
    with serving(Recorder(), "recorder", host="localhost", port=0) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        client.initialize()
        client._session, client._last_time_s = "not-a-session", -1.0  # a session the server never started
        client._channel = grpc.insecure_channel(address)
        with pytest.raises(AgentError) as err:
            client._send_egomotion(client._stub(), 0, Pose.identity(), decisions[0][1].ego_state)
    assert str(err.value) == (f"policy service {address}: submit_egomotion_observation failed: NOT_FOUND: Unknown "
                              "session not-a-session")


# ---- what a server receives ----------------------------------------------------------------------------------------

class Witness(BaseDriver):
    """A contract policy that records, at each drive, what its session holds; it plans 4 s straight at 5 m/s."""

    name = "witness"

    def __init__(self):
        self.drives, self.starts, self.closed = [], [], []

    def on_session_start(self, session):
        self.starts.append(session)

    def on_session_close(self, session):
        self.closed.append(session.uuid)

    def drive(self, ctx):
        session = ctx.session
        self.drives.append({"now": ctx.time_now_us, "query": ctx.time_query_us, "pose": session.latest_pose(),
                            "state": session.latest_dynamic_state(), "route": session.route_waypoints_in_rig.copy(),
                            "route_time": session.route_timestamp_us,
                            "frame": session.latest_frame("CAM_F0")})
        plan = RigTrajectory.empty()
        for k in range(1, 41):
            plan.append(ctx.time_now_us + 100_000 * k, Pose.from_xyz_yaw(0.5 * k, 0.0, 0.0, 0.0))
        return DriveResult(trajectory_in_rig=plan)


@contextmanager
def witness_server(witness: BaseDriver, mode: str = "carla"):
    server, port = build_server(witness, port=0, host="localhost", mode=mode)
    server.start()
    try:
        yield f"localhost:{port}"
    finally:
        server.stop(grace=None)


def test_a_contract_server_receives_the_session_egomotion_route_and_frame_of_each_decision():
    decisions = _closed_loop_decisions(2)
    witness = Witness()
    with witness_server(witness) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        plans = [client.compute_trajectory(*decision).poses for decision in decisions]
        session = client._session
        client.close()
        client.close()  # nothing left to close
    (start,) = witness.starts
    assert (start.uuid, start.seed, witness.closed) == (session, 0, [session])
    # The camera as declared, in revision 2 (its optical frame in the rig): the client sent the revision it speaks.
    assert list(start.cameras) == ["CAM_F0"] and start.cameras["CAM_F0"] == front_camera()
    origin = decisions[0][1].ego_state
    for drive, (agent_input, world) in zip(witness.drives, decisions):
        now = round(world.time_s * 1e6)
        assert (drive["now"], drive["query"], drive["route_time"]) == (now, now + 500_000, now)
        state = world.ego_state
        local = global_to_local(state[None, :3], origin[:3])[0]
        np.testing.assert_allclose(xy_heading(drive["pose"]), local, rtol=0, atol=1e-4)  # float32 on the wire
        dynamic = drive["state"]
        np.testing.assert_allclose(
            [dynamic.linear_velocity.x, dynamic.linear_velocity.y, dynamic.linear_velocity.z,
             dynamic.linear_acceleration.x, dynamic.linear_acceleration.y, dynamic.linear_acceleration.z,
             dynamic.angular_velocity.x, dynamic.angular_velocity.y, dynamic.angular_velocity.z],
            [state[StateIndex.VELOCITY_X], state[StateIndex.VELOCITY_Y], 0.0, state[StateIndex.ACCELERATION_X],
             state[StateIndex.ACCELERATION_Y], 0.0, 0.0, 0.0, state[StateIndex.ANGULAR_VELOCITY]], rtol=1e-6, atol=1e-6)
        # The route ahead in the rig frame: from the nearest route point, at most 200 m of it.
        line = global_to_local(np.column_stack([world.road_map.route_polyline(world.route), np.zeros(
            len(world.road_map.route_polyline(world.route)))]), state[:3])[:, :2]
        start_index = int(np.argmin(np.hypot(line[:, 0], line[:, 1])))
        along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line[start_index:], axis=0), axis=1))])
        expected = line[start_index:][along <= 200.0]
        np.testing.assert_allclose(drive["route"][:, :2], expected, rtol=0, atol=1e-4)
        assert not drive["route"][:, 2].any()
        assert np.array_equal(drive["frame"].as_array(), agent_input.cameras[-1])  # PNG: every pixel
        assert drive["frame"].timestamp_us == now
    straight = np.array([[2.5 * k, 0.0, 0.0] for k in range(1, 9)])
    assert all(np.allclose(plan, straight, rtol=0, atol=1e-4) for plan in plans)
    assert client.last_inference_s is not None and client.last_inference_s >= 0


def _witnessed(decisions: list, mode: str = "carla") -> tuple[Witness, EgodriverAgent]:
    """(the witness, the client) after the client made `decisions` against a Witness server and closed."""
    witness = Witness()
    with witness_server(witness, mode) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        for decision in decisions:
            client.compute_trajectory(*decision)
        client.close()
    return witness, client


def test_a_decision_at_the_same_time_as_the_last_is_a_new_scene_and_a_session_of_its_own():
    (decision,) = _closed_loop_decisions(1)
    witness, _ = _witnessed([decision, decision])
    assert len(witness.starts) == 2 and witness.closed == [s.uuid for s in witness.starts]


def test_a_server_in_alpasim_mode_reports_no_time_of_its_own():
    _, client = _witnessed(_closed_loop_decisions(1), mode="alpasim")
    assert client.last_inference_s is None


def test_a_payload_of_12_mb_goes_through():
    """The frames of a large camera travel whole: channels take carla-driver-interface's message size limit."""
    (decision,) = _closed_loop_decisions(1)
    agent_input, world = decision
    big = replace(agent_input, cameras=np.zeros((4, 1024, 1024, 3), dtype=np.uint8))
    recorder = Recorder(cameras=True)
    with serving(recorder, "recorder", host="localhost", port=0) as address:
        client = EgodriverAgent(address, timeout_s=30, retries=0)
        client.compute_trajectory(big, world)
        client.close()
    assert recorder.seen[0][0].cameras.shape == (4, 1024, 1024, 3)


class TwoFramesRecorder(Recorder):
    def get_sensor_config(self):
        return SensorConfig(cameras=True, history_frames=2)


class FiveAtOneSecond(Recorder):
    def __init__(self):
        super().__init__()
        self.trajectory_sampling = TrajectorySampling(num_poses=5, interval=1.0)


def test_what_a_w0sim_server_describes_is_what_the_client_asks_of_the_environment():
    with serving(TwoFramesRecorder(), "two", host="localhost", port=0) as address:
        assert EgodriverAgent(address, timeout_s=10).get_sensor_config() == SensorConfig(cameras=True, history_frames=2)
    with serving(FiveAtOneSecond(), "five", host="localhost", port=0) as address:
        with pytest.raises(AgentError) as err:
            EgodriverAgent(address, timeout_s=10).initialize()
    assert str(err.value) == (f"policy service {address} plans 5 poses 1.0 s apart; the evaluation scores "
                              "TrajectorySampling(num_poses=8, interval=0.5)")


class Liar(AgentDriver):
    """Answers Plan with another plan than its drive returned (or with junk)."""

    junk = False

    def plan(self, request, context):
        return b"junk" if self.junk else encode_plan(PLAN + 0.5)


def _crash_against(driver: AgentDriver) -> tuple[str, str]:
    """(address, the AgentError's message) of one decision against `driver` served with w0sim's extension."""
    (decision,) = _closed_loop_decisions(1)
    server, port = build_server(driver, port=0, host="localhost")
    server.add_generic_rpc_handlers((extension_handler(driver),))
    server.start()
    try:
        client = EgodriverAgent(f"localhost:{port}", timeout_s=10, retries=0)
        with pytest.raises(AgentError) as err:
            client.compute_trajectory(*decision)
    finally:
        server.stop(grace=None)
    return f"localhost:{port}", str(err.value)


@pytest.mark.parametrize("junk, message", [
    (False, "its exact plan (w0sim Plan) differs from the plan its drive returned by more than 0.01 m"),
    (True, "Plan answered something that is not a .npy array"),
])
def test_an_exact_plan_that_is_not_the_drives_plan_crashes_the_agent(junk, message):
    liar = Liar(Recorder(), "liar")
    liar.junk = junk
    address, crash = _crash_against(liar)
    assert crash.startswith(f"policy service {address}: {message}")


class FlakyCall:
    """A gRPC call that fails with `codes` in turn, then answers "ok"; records its timeouts and keyword arguments."""

    def __init__(self, *codes, details="the details"):
        self.codes, self.details, self.calls = list(codes), details, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.codes:
            error = grpc.RpcError()
            code = self.codes.pop(0)
            error.code, error.details = (lambda: code), (lambda: self.details)
            raise error
        return "ok"


def test_a_call_is_retried_with_growing_pauses_and_its_deadline_and_arguments_each_time(monkeypatch):
    pauses = []
    monkeypatch.setattr("agents.egodriver.time.sleep", pauses.append)
    client = EgodriverAgent("h:1", timeout_s=3.5, retries=5)
    call = FlakyCall(*[grpc.StatusCode.UNAVAILABLE] * 3, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert client._call("drive", call, "request", metadata="m") == "ok"
    assert pauses == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert call.calls == [(("request",), {"timeout": 3.5, "metadata": "m"})] * 6


def test_a_call_that_never_gets_an_answer_is_unavailable_and_any_other_error_is_the_agents(monkeypatch):
    monkeypatch.setattr("agents.egodriver.time.sleep", lambda s: None)
    client = EgodriverAgent("h:1", timeout_s=2, retries=1)
    with pytest.raises(AgentUnavailable) as err:
        client._call("drive", FlakyCall(*[grpc.StatusCode.DEADLINE_EXCEEDED] * 2, details="  too\n slow "))
    assert str(err.value) == "policy service h:1: drive failed: DEADLINE_EXCEEDED: too slow (after 2 tries, 2 s each)"
    with pytest.raises(AgentError) as err:
        client._call("drive", FlakyCall(grpc.StatusCode.INTERNAL, details=""))
    assert str(err.value) == "policy service h:1: drive failed: INTERNAL: (no details)"
    call = FlakyCall(grpc.StatusCode.UNIMPLEMENTED)
    assert client._call("w0sim Describe", call, absent_ok=True) is None and len(call.calls) == 1
    with pytest.raises(AgentError) as err:
        client._call("w0sim Describe", FlakyCall(grpc.StatusCode.UNIMPLEMENTED))
    assert str(err.value) == "policy service h:1: w0sim Describe failed: UNIMPLEMENTED: the details"


def test_the_defaults_and_a_sub_second_timeout():
    client = EgodriverAgent("h:1")
    assert (client.timeout_s, client.retries, client.last_inference_s) == (30.0, 2, None)
    assert EgodriverAgent("h:1", timeout_s=0.25).timeout_s == 0.25


def test_an_agent_left_open_closes_its_session_when_the_process_ends():
    (decision,) = _closed_loop_decisions(1)
    witness = Witness()
    with witness_server(witness) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        client.compute_trajectory(*decision)
        _close_at_exit(weakref.ref(client))
    assert witness.closed == [witness.starts[0].uuid]
    _close_at_exit(lambda: None)  # an agent already gone: nothing to do


# ---- what each call is called when it fails --------------------------------------------------------------------------

class Faulty(Witness):
    """Fails in the hook named `where` (the servicer turns that into the call's error)."""

    def __init__(self, where: str):
        super().__init__()
        self.where = where

    def _fail(self, hook: str):
        if hook == self.where:
            raise RuntimeError(f"no {hook}")

    def on_session_start(self, session):
        self._fail("on_session_start")
        super().on_session_start(session)

    def on_egomotion(self, session, new_poses):
        self._fail("on_egomotion")

    def on_route(self, session):
        self._fail("on_route")

    def on_frame(self, session, frame):
        self._fail("on_frame")

    def drive(self, ctx):
        self._fail("drive")
        return super().drive(ctx)


@pytest.mark.parametrize("where, call, code", [
    ("on_session_start", "start_session", "FAILED_PRECONDITION"),
    ("on_egomotion", "submit_egomotion_observation", "UNKNOWN"),
    ("on_route", "submit_route", "UNKNOWN"),
    ("on_frame", "submit_image_observation", "UNKNOWN"),
    ("drive", "drive", "UNKNOWN"),
])
def test_a_contract_call_that_fails_is_named_in_the_agents_crash(where, call, code):
    (decision,) = _closed_loop_decisions(1)
    with witness_server(Faulty(where)) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        with pytest.raises(AgentError) as err:
            client.compute_trajectory(*decision)
    assert str(err.value).startswith(f"policy service {address}: {call} failed: {code}: ")


class FaultyW0sim(AgentDriver):
    """A w0sim server whose extension call `where` fails, or whose Describe answers junk."""

    def __init__(self, where: str):
        super().__init__(Recorder(), "faulty")
        self.where = where

    def description(self):
        if self.where == "junk":
            return b"junk"
        if self.where == "Describe":
            raise RuntimeError("no Describe")
        return super().description()

    def submit(self, payload, context):
        if self.where == "Submit":
            raise RuntimeError("no Submit")
        return super().submit(payload, context)

    def plan(self, request, context):
        if self.where == "Plan":
            raise RuntimeError("no Plan")
        return super().plan(request, context)


@pytest.mark.parametrize("where, message", [
    ("Describe", "w0sim Describe failed: UNKNOWN: "),
    ("Submit", "w0sim Submit failed: UNKNOWN: "),
    ("Plan", "w0sim Plan failed: UNKNOWN: "),
    ("junk", "Describe answered something that is not JSON (Expecting value: line 1 column 1 (char 0))"),
])
def test_an_extension_call_that_fails_is_named_in_the_agents_crash(where, message):
    address, crash = _crash_against(FaultyW0sim(where))
    assert crash.startswith(f"policy service {address}: {message}")


# ---- the rest of the client's rules --------------------------------------------------------------------------------

def test_the_dynamic_state_sent_is_the_ego_states_body_frame_dynamics():
    witness = Witness()
    with witness_server(witness) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        (decision,) = _closed_loop_decisions(1)
        client._describe()
        client._start_session(decision[1])
        state = np.arange(1.0, 12.0) / 4  # every column its own value: 0.25, 0.5, ...
        client._send_egomotion(client._stub(), 0, Pose.identity(), state)
        client._call("drive", client._stub().drive, DriveRequest(session_uuid=client._session, time_now_us=0))
        client.close()
    dynamic = witness.drives[0]["state"]
    assert [dynamic.linear_velocity.x, dynamic.linear_velocity.y, dynamic.linear_velocity.z] == [1.0, 1.25, 0.0]
    assert [dynamic.linear_acceleration.x, dynamic.linear_acceleration.y, dynamic.linear_acceleration.z] == [1.5, 1.75, 0.0]
    assert [dynamic.angular_velocity.x, dynamic.angular_velocity.y, dynamic.angular_velocity.z] == [0.0, 0.0, 2.5]


def test_a_world_without_a_route_sends_an_empty_route_and_a_late_first_decision_starts_a_session():
    _, (agent_input, world) = _closed_loop_decisions(2)  # the first call of this agent is at t = 0.5 s
    witness, _ = _witnessed([(agent_input, replace(world, route=[]))])
    assert len(witness.starts) == 1 and witness.drives[0]["route"].shape == (0, 3)
    assert witness.drives[0]["now"] == 500_000


def test_time_is_sent_in_microseconds():
    witness, _ = _witnessed(_closed_loop_decisions(4))
    assert [drive["now"] for drive in witness.drives] == [0, 500_000, 1_000_000, 1_500_000]


def test_a_served_agent_that_is_not_privileged_gets_no_world_view():
    agent = Recorder(cameras=True)
    agent.privileged = False
    (decision,) = _closed_loop_decisions(1)
    with serving(agent, "eyes", host="localhost", port=0) as address:
        client = EgodriverAgent(address, timeout_s=10, retries=0)
        client.compute_trajectory(*decision)
        client.close()
    assert agent.seen[0][1] is None and agent.seen[0][0] == decision[0]


def test_asking_the_server_leaves_no_channel_open_and_no_world_is_an_error():
    with serving(Recorder(), "recorder", host="localhost", port=0) as address:
        client = EgodriverAgent(address, timeout_s=10)
        client.initialize()
        assert client._channel is None  # the process that starts a run asks, then forks its workers
        with pytest.raises(AgentError) as err:
            client.compute_trajectory(_closed_loop_decisions(1)[0][0], None)
    assert str(err.value).startswith(f"egodriver:{address} is privileged: it plans from the world view")


def test_options_without_an_address_are_refused():
    with pytest.raises(AgentError) as err:
        EgodriverAgent.from_options(AgentOptions())
    assert str(err.value) == "egodriver agent: give the server as egodriver:HOST:PORT or egodriver:unix:///PATH"


def test_every_agent_is_closed_when_the_process_ends(monkeypatch):
    registered = []
    monkeypatch.setattr("agents.egodriver.atexit.register", lambda *args: registered.append(args))
    client = EgodriverAgent("h:1")
    ((function, reference),) = registered
    assert function is _close_at_exit and reference() is client
