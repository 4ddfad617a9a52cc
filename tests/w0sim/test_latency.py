"""Latency in the loop: DecisionTimer's per-decision times, their markdown line, and plans held back by PlanDelay."""
from __future__ import annotations

import math

import numpy as np
import pytest

from agents.base import Agent
from sim.agent_input import build_agent_input
from sim.geometry import global_to_local, local_to_global
from sim.state import Trajectory, TrajectorySampling
from tests.w0sim.conftest import DECISION_S
from w0sim.latency import DecisionTimer, PlanDelay, latency_markdown, shift

AGENT_INPUT = build_agent_input(np.zeros((4, 11)), 1)


class ScriptedAgent(Agent):
    """Plans the given trajectories in turn; reports the given inference times (None: reports nothing); raises
    the given exceptions instead of planning."""

    def __init__(self, script: list):
        super().__init__()
        self.script = list(script)
        self.seen_inference_s: list = []  # last_inference_s as each call found it
        self.seen: list = []  # (agent_input, world) of each call

    def compute_trajectory(self, agent_input, world=None):
        self.seen_inference_s.append(self.last_inference_s)
        self.seen.append((agent_input, world))
        result, inference_s = self.script.pop(0)
        if inference_s is not None:
            self.last_inference_s = inference_s
        if isinstance(result, Exception):
            raise result
        return result


def trajectory(value: float) -> Trajectory:
    return Trajectory(np.full((8, 3), value))


# --- DecisionTimer ------------------------------------------------------------------------------------------------


def test_plan_returns_the_agents_trajectory_and_times_each_decision():
    first, second = trajectory(1.0), trajectory(2.0)
    agent = ScriptedAgent([(first, None), (second, None)])
    timer = DecisionTimer()
    world = object()
    assert timer.plan(agent, AGENT_INPUT, None) is first
    assert timer.plan(agent, AGENT_INPUT, world) is second
    assert agent.seen == [(AGENT_INPUT, None), (AGENT_INPUT, world)]
    assert timer.wall_s == [DECISION_S, DECISION_S]
    assert timer.inference_s == []
    assert timer.summary() == {"decisions": 2, "wall_s_mean": 0.25, "wall_s_p95": 0.25, "wall_s_max": 0.25}


def test_plan_records_the_agents_own_time_and_resets_it_before_each_call():
    agent = ScriptedAgent([(trajectory(0.0), 0.125), (trajectory(0.0), None), (trajectory(0.0), 0.0625)])
    agent.last_inference_s = 9.0  # left over from some earlier use
    timer = DecisionTimer()
    for _ in range(3):
        timer.plan(agent, AGENT_INPUT, None)
    assert agent.seen_inference_s == [None, None, None]
    assert timer.inference_s == [0.125, 0.0625]
    assert all(type(value) is float for value in timer.inference_s)
    assert timer.wall_s == [0.25, 0.25, 0.25]
    assert timer.summary() == {"decisions": 3, "wall_s_mean": 0.25, "wall_s_p95": 0.25, "wall_s_max": 0.25,
                               "inference_s_mean": 0.09375}


def test_plan_times_a_decision_that_raises_and_raises_again():
    agent = ScriptedAgent([(RuntimeError("no plan"), 0.5), (RuntimeError("again"), None)])
    timer = DecisionTimer()
    with pytest.raises(RuntimeError, match="^no plan$"):
        timer.plan(agent, AGENT_INPUT, None)
    assert (timer.wall_s, timer.inference_s) == ([0.25], [0.5])
    with pytest.raises(RuntimeError, match="^again$"):
        timer.plan(agent, AGENT_INPUT, None)
    assert (timer.wall_s, timer.inference_s) == ([0.25, 0.25], [0.5])
    assert agent.last_inference_s is None


def test_summary_without_decisions():
    assert DecisionTimer().summary() == {"decisions": 0}


def test_summary_of_decisions_of_different_lengths(monkeypatch):
    ticks = iter([0.0, 0.25, 1.0, 3.0, 3.5, 5.5])
    monkeypatch.setattr(DecisionTimer, "clock", staticmethod(lambda: next(ticks)))
    agent = ScriptedAgent([(trajectory(0.0), None)] * 3)
    timer = DecisionTimer()
    for _ in range(3):
        timer.plan(agent, AGENT_INPUT, None)
    assert timer.wall_s == [0.25, 2.0, 2.0]
    summary = timer.summary()
    assert summary == {"decisions": 3, "wall_s_mean": 4.25 / 3, "wall_s_p95": 2.0, "wall_s_max": 2.0}
    assert all(type(value) is float for key, value in summary.items() if key != "decisions")


def test_summary_p95_is_numpys_linear_percentile():
    timer = DecisionTimer()
    timer.wall_s = [0.25] * 19 + [0.5, 1.0]  # 21 values: the 95th percentile is the 20th smallest
    timer.inference_s = [0.125, 0.25]
    assert timer.summary() == {"decisions": 21, "wall_s_mean": 6.25 / 21, "wall_s_p95": 0.5, "wall_s_max": 1.0,
                               "inference_s_mean": 0.1875}


# --- latency_markdown ---------------------------------------------------------------------------------------------


def test_latency_markdown_without_decisions_is_empty():
    assert latency_markdown([]) == ""
    assert latency_markdown([{"decisions": 0}, {"decisions": 0}]) == ""


def test_latency_markdown_of_one_decision_is_singular():
    agent = ScriptedAgent([(trajectory(0.0), None)])
    timer = DecisionTimer()
    timer.plan(agent, AGENT_INPUT, None)
    assert latency_markdown([timer.summary(), {"decisions": 0}]) == (
        "Policy time per decision: mean 250.0 ms, max 250.0 ms over 1 decision.\n")


def test_latency_markdown_weights_the_scenes_by_their_decisions():
    scenes = [{"decisions": 3, "wall_s_mean": 0.1, "wall_s_p95": 0.2, "wall_s_max": 0.2},
              {"decisions": 0},
              {"decisions": 1, "wall_s_mean": 0.5, "wall_s_p95": 0.5, "wall_s_max": 0.5}]
    assert latency_markdown(scenes) == "Policy time per decision: mean 200.0 ms, max 500.0 ms over 4 decisions.\n"


def test_latency_markdown_gives_the_served_policys_share():
    scenes = [{"decisions": 3, "wall_s_mean": 0.4, "wall_s_p95": 0.4, "wall_s_max": 0.4, "inference_s_mean": 0.1},
              {"decisions": 1, "wall_s_mean": 0.8, "wall_s_p95": 0.8, "wall_s_max": 1.25, "inference_s_mean": 0.5},
              {"decisions": 2, "wall_s_mean": 0.1, "wall_s_p95": 0.1, "wall_s_max": 0.1}]
    # Wall: (1.2 + 0.8 + 0.2) / 6 s; own compute over the served scenes only: (0.3 + 0.5) / 4 s.
    assert latency_markdown(scenes) == (
        "Policy time per decision: mean 366.7 ms, max 1250.0 ms over 6 decisions; the served policy's own compute "
        "200.0 ms of it on average, the rest the wire.\n")


# --- PlanDelay ----------------------------------------------------------------------------------------------------


def straight_plan(start: float = 1.0) -> np.ndarray:
    """Poses 1 m apart along x from `start`, heading 0."""
    return np.column_stack([start + np.arange(8.0), np.zeros(8), np.zeros(8)])


def test_no_delay_drives_the_plan_itself():
    delay = PlanDelay(0.0)
    plan = np.arange(24.0).reshape(8, 3)
    assert delay.steps == 0
    assert delay.action(plan, np.array([5.0, 6.0, 1.0])) is plan
    assert delay.action(plan, np.zeros(11)) is plan
    assert np.array_equal(plan, np.arange(24.0).reshape(8, 3))


def test_half_second_delay_holds_still_then_drives_the_previous_plan_one_pose_on():
    delay = PlanDelay(0.5)
    assert delay.steps == 1
    first = delay.action(straight_plan(), np.zeros(11))
    assert first.shape == (8, 3) and np.array_equal(first, np.zeros((8, 3)))
    # The ego moved 1 m along x: the previous plan, one pose on, in its new frame, is again 1..8 m ahead.
    ego = np.zeros(11)
    ego[0] = 1.0
    second = delay.action(np.full((8, 3), 99.0), ego)
    assert np.array_equal(second, straight_plan())


def test_delay_re_expresses_the_held_plan_in_the_frame_of_the_decision_that_drives_it():
    delay = PlanDelay(0.5)
    delay.action(straight_plan(), np.zeros(11))
    ego = np.zeros(11)
    ego[:3] = 1.0, 0.0, math.pi / 2  # turned left: the plan's straight line now runs to the ego's right
    found = delay.action(straight_plan(), ego)
    expected = np.column_stack([np.zeros(8), -(np.arange(8.0) + 1.0), np.full(8, -math.pi / 2)])
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)


def test_delay_of_a_curved_plan_with_a_moving_ego():
    i = np.arange(1.0, 9.0)
    plan_1 = np.column_stack([2.0 * i, 0.1 * i ** 2, 0.05 * i])
    plan_2 = np.column_stack([1.5 * i, -0.2 * i, -0.01 * i])
    plan_3 = np.zeros((8, 3))
    ego_1, ego_2, ego_3 = np.zeros(11), np.zeros(11), np.zeros(11)
    ego_1[:3] = 10.0, 5.0, 0.3
    ego_2[:3] = 11.9, 5.7, 0.36
    ego_3[:3] = 13.5, 6.4, 0.34
    delay = PlanDelay(0.5)
    assert np.array_equal(delay.action(plan_1, ego_1), np.zeros((8, 3)))
    found_2 = delay.action(plan_2, ego_2)
    found_3 = delay.action(plan_3, ego_3)
    for plan, made_at, driven_at, found in ((plan_1, ego_1, ego_2, found_2), (plan_2, ego_2, ego_3, found_3)):
        held = local_to_global(plan, made_at[:3])
        step = held[-1] - held[-2]
        shifted = np.vstack([held[1:], held[-1] + step])  # pose i + 1; one more step at the end
        np.testing.assert_allclose(found, global_to_local(shifted, driven_at[:3]), rtol=0, atol=1e-12)


def test_one_second_delay_holds_two_decisions():
    delay = PlanDelay(1.0)
    assert delay.steps == 2
    egos = [np.zeros(11) for _ in range(4)]
    for k, ego in enumerate(egos):
        ego[0] = float(k)
    assert np.array_equal(delay.action(straight_plan(), egos[0]), np.zeros((8, 3)))
    assert np.array_equal(delay.action(straight_plan(2.0), egos[1]), np.zeros((8, 3)))
    # The first plan (1..8 m from x = 0), two poses on (3..10 m), seen from x = 2; then the second (3..10 m from
    # x = 1), two poses on (5..12 m), seen from x = 3.
    assert np.array_equal(delay.action(straight_plan(), egos[2]), straight_plan())
    assert np.array_equal(delay.action(straight_plan(), egos[3]), straight_plan(2.0))


def test_delay_in_whole_intervals_of_another_sampling():
    delay = PlanDelay(0.3, TrajectorySampling(num_poses=4, interval=0.1))
    assert delay.steps == 3
    assert np.array_equal(delay.action(np.ones((4, 3)), np.zeros(11)), np.zeros((4, 3)))
    assert PlanDelay(1.5).steps == 3


@pytest.mark.parametrize("delay_s, shown", [(-0.5, "-0.5"), (0.3, "0.3"), (0.75, "0.75"), (math.nan, "nan"),
                                            (math.inf, "inf"), (-math.inf, "-inf")])
def test_invalid_delays(delay_s, shown):
    with pytest.raises(ValueError) as err:
        PlanDelay(delay_s)
    assert str(err.value) == f"plan delay {shown} s must be a whole number of decisions (0.5 s each), 0 or more"


def test_invalid_delay_names_the_sampling_interval():
    with pytest.raises(ValueError) as err:
        PlanDelay(0.5, TrajectorySampling(num_poses=10, interval=0.2))
    assert str(err.value) == "plan delay 0.5 s must be a whole number of decisions (0.2 s each), 0 or more"


# --- shift --------------------------------------------------------------------------------------------------------


def test_shift_takes_later_poses_and_continues_the_last_step():
    poses = np.array([[1.0, 0.0, 0.0], [2.0, 0.5, 0.25], [4.0, 1.0, 0.5], [7.0, 2.0, 1.0]])
    assert np.array_equal(shift(poses, 0), poses)
    assert np.array_equal(shift(poses, 1), [[2.0, 0.5, 0.25], [4.0, 1.0, 0.5], [7.0, 2.0, 1.0], [10.0, 3.0, 1.5]])
    assert np.array_equal(shift(poses, 3), [[7.0, 2.0, 1.0], [10.0, 3.0, 1.5], [13.0, 4.0, 2.0], [16.0, 5.0, 2.5]])
    assert np.array_equal(shift(poses, 6), [[16.0, 5.0, 2.5], [19.0, 6.0, 3.0], [22.0, 7.0, 3.5], [25.0, 8.0, 4.0]])
    assert np.array_equal(poses, [[1.0, 0.0, 0.0], [2.0, 0.5, 0.25], [4.0, 1.0, 0.5], [7.0, 2.0, 1.0]])


def test_shift_of_a_single_pose_holds_it():
    assert np.array_equal(shift(np.array([[3.0, 4.0, 0.5]]), 2), [[3.0, 4.0, 0.5]])


def test_shift_turns_the_short_way_across_plus_minus_pi():
    poses = np.array([[0.0, 0.0, 2.9], [1.0, 0.1, 3.0], [2.0, 0.2, -3.0]])  # turning left through pi
    found = shift(poses, 2)
    turn = 2 * math.pi - 6.0  # the short way from 3.0 to -3.0, about 0.283 rad to the left
    np.testing.assert_allclose(found, [[2.0, 0.2, -3.0], [3.0, 0.3, -3.0 + turn], [4.0, 0.4, -3.0 + 2 * turn]],
                               rtol=0, atol=1e-12)
    right = shift(poses * [1, -1, -1], 1)  # mirrored: turning right through -pi
    np.testing.assert_allclose(right[-1], [3.0, -0.3, 3.0 - turn], rtol=0, atol=1e-12)


def test_shift_continues_a_two_pose_plan_at_its_one_step():
    poses = np.array([[1.0, 0.0, 0.0], [2.0, 0.5, 0.1]])
    np.testing.assert_allclose(shift(poses, 1), [[2.0, 0.5, 0.1], [3.0, 1.0, 0.2]], rtol=0, atol=1e-12)
