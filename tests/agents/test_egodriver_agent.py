"""The egodriver agent's own rules: how it is named and built, and how a served plan becomes NAVSIM's 8 poses."""
from __future__ import annotations

import numpy as np
import pytest
from carla_driver_interface.geometry import Pose
from carla_driver_interface.geometry import Trajectory as RigTrajectory

from agents.base import AgentError, AgentOptions
from agents.egodriver import EgodriverAgent
from agents.registry import SERVED_AGENT, AgentSpec, resolve_agent


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
