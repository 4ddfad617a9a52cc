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
