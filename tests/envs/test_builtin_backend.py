"""The embedded simulator backend: tracking equals NAVSIM's simulate, lights continue past the log, traffic modes."""
import numpy as np
import pytest

from scenarios.generator import GeneratorConfig, generate_scene
from sim.dynamics import interpolate_trajectory_states, simulate
from sim.envs.backends.builtin import BuiltinSimulator, SimulatorConfig
from sim.traffic import SignalPlan


@pytest.fixture(scope="module")
def intersection():
    return generate_scene("intersection", 5, GeneratorConfig(future_s=4.0))


def straight_plan(speed=8.0):
    return np.stack([np.arange(1, 9) * 0.5 * speed, np.zeros(8), np.zeros(8)], -1)


def test_stepping_a_plan_reproduces_navsim_simulate(intersection):
    sim = BuiltinSimulator(intersection, SimulatorConfig(traffic="replay"))
    plan = straight_plan()
    reference = interpolate_trajectory_states(sim.ego, plan, 0.5)
    expected = simulate(sim.ego, reference)[0]
    sim.plan(plan, 0.5)
    states = [sim.ego] + [sim.step() and sim.ego for _ in range(40)]
    # Same tracker and model; NAVSIM steps the model by 0.09999999999999999 s, we by 0.1 s.
    np.testing.assert_allclose(np.array(states), expected, atol=1e-9)


def test_lights_continue_with_the_signal_plan_after_the_log(intersection):
    sim = BuiltinSimulator(intersection)
    plans = [SignalPlan.from_dict(p) for p in intersection.metadata["signal_plans"]]
    offset = intersection.metadata["signal_time_offset_s"]
    # Inside the log: the logged states; after it: what the plan says for that time.
    for step in (intersection.num_steps - 1, intersection.num_steps, intersection.num_steps + 700):
        expected = np.concatenate([p.status_at(offset + step * 0.1)[0] for p in plans])
        np.testing.assert_array_equal(sim.light_status(step), expected)


def test_lights_minutes_past_the_log_can_be_asked_first(intersection):
    """light_status(step) for a step 3.5 min after the log, with no earlier step asked, is the plan's state then."""
    plans = [SignalPlan.from_dict(p) for p in intersection.metadata["signal_plans"]]
    offset = intersection.metadata["signal_time_offset_s"]
    step = intersection.num_steps + 2100
    expected = np.concatenate([p.status_at(offset + step * 0.1)[0] for p in plans])
    np.testing.assert_array_equal(BuiltinSimulator(intersection).light_status(step), expected)


def test_replay_mode_follows_the_log_and_reactive_mode_drives_idm(intersection):
    replay = BuiltinSimulator(intersection, SimulatorConfig(traffic="replay"))
    reactive = BuiltinSimulator(intersection, SimulatorConfig(traffic="reactive"))
    assert replay.idm is None and reactive.idm is not None and reactive.idm.count > 0
    for sim in (replay, reactive):
        sim.plan(straight_plan(), 0.5)
        for _ in range(10):
            sim.step()
    logged = intersection.agents.at(intersection.current_index + 10)
    np.testing.assert_array_equal(replay.agents().x, logged.x)
    # Reactive agents move on their lanes: close to the log over 1 s, but simulated.
    now = reactive.agents()
    moved = reactive._idm_index[logged.valid[reactive._idm_index] & now.valid[reactive._idm_index]]
    assert moved.size > 3 and not np.array_equal(now.x[moved], logged.x[moved])
    assert np.max(np.hypot(now.x[moved] - logged.x[moved], now.y[moved] - logged.y[moved])) < 5.0


def test_unknown_traffic_mode_is_rejected():
    with pytest.raises(ValueError, match="traffic must be one of"):
        SimulatorConfig(traffic="chaotic")


def test_off_road_is_any_corner_of_the_footprint_off_the_drivable_area():
    """The ego standing with its centre 0.4 m inside the road edge: a corner sticks out, so the step is off-road
    (testing the centre alone would say on-road); 3 m further in, every corner is on the road."""
    from sim.geometry import PACIFICA, ego_corners
    from sim.state import StateIndex

    def standing_at(offset: float) -> BuiltinSimulator:
        scene = generate_scene("straight", 0)
        now = scene.ego_log[scene.current_index].copy()
        left = np.array([-np.sin(now[StateIndex.HEADING]), np.cos(now[StateIndex.HEADING])])
        now[[StateIndex.X, StateIndex.Y]] += offset * left
        now[StateIndex.VELOCITY_X:] = 0.0
        scene.ego_log[scene.current_index] = now
        return BuiltinSimulator(scene)

    probe = standing_at(0.0)
    ego, road = probe.ego, probe.scene.map
    left = np.array([-np.sin(ego[StateIndex.HEADING]), np.cos(ego[StateIndex.HEADING])])
    offsets = np.arange(0.0, 30.0, 0.05)
    edge = offsets[np.argmin(road.is_drivable(ego[:2] + offsets[:, None] * left))]  # first point off the road
    near_edge = standing_at(edge - 0.4)
    centre = ego_corners(near_edge.ego, PACIFICA).mean(axis=0)
    assert road.is_drivable(centre[None])[0]  # the precondition: the centre is on the road
    assert near_edge.step(np.zeros(2)).offroad
    assert not standing_at(edge - 3.0).step(np.zeros(2)).offroad
