"""The egodriver agent: how it is named and built, how a served plan becomes NAVSIM's 8 poses, and what it sends a
w0sim server and any other server in this process."""
from __future__ import annotations

from contextlib import contextmanager

import grpc
import numpy as np
import pytest
from carla_driver_interface.geometry import Pose
from carla_driver_interface.geometry import Trajectory as RigTrajectory
from carla_driver_interface.server import build_server

from agents.base import Agent, AgentError, AgentOptions, AgentUnavailable, SensorConfig
from agents.egodriver import EgodriverAgent
from agents.registry import SERVED_AGENT, AgentSpec, resolve_agent
from scenarios.generator import generate_scene
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.state import Trajectory
from w0sim.serve import AgentDriver, serving


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


def test_a_denser_plan_is_interpolated_at_navsims_times():
    """A 10 Hz plan at 4 m/s turning at 0.1 rad/s: NAVSIM's pose k is the plan's pose at (k + 1) x 0.5 s."""
    times = [0.1 * k for k in range(1, 41)]
    poses = [(4.0 * t, 0.0, 0.1 * t) for t in times]
    sampled = EgodriverAgent("h:1")._sample(_plan([0.05] + times[1:], [(0.2, 0.0, 0.005)] + poses[1:]), 3_000_000)
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
