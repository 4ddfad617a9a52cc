"""The CARLA backend's behaviour that a mutation run (mutmut, seeded sample of the backend's mutants) found untested:
the other actors after the first step, the PID follower's unclipped throttle and its aim distance, the red-light
monitor's inputs, scenes without dense route points, what a failing call at reset and at clean-up is reported as, and
the backend's own refusals. Against the FAKE CARLA server (tests/fakes/carla_server.py), as test_carla_env.py.

Expected values are worked out by hand (TransFuser's PID constants, CARLA's left-handed frame), not read back from the
code under test."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

carla = pytest.importorskip("carla", reason="the fake CARLA server needs the carla client package (pip install 'w0sim[carla]')")

from sim.envs.backends.carla.control import TrajectoryController  # noqa: E402
from sim.envs.backends.carla.simulator import CarlaSimulator  # noqa: E402
from sim.envs.backends.carla.world import TickHung  # noqa: E402
from sim.envs.backends.failures import SimulationCrashed  # noqa: E402
from sim.envs.carla_env import CleanupWarning  # noqa: E402
from tests.fakes.carla_server import FakeClient, FakeSensor, FakeWorld  # noqa: E402

TIMES = (np.arange(8) + 1) * 0.5  # the default trajectory sampling: 8 poses, 0.5 s apart
LATERAL_FIRST_STEP = 1.25 + 0.75 / 20 + 0.3  # TransFuser's lateral PID on its first error a: kp a + ki a / 20 + kd a


def straight(speed: float) -> np.ndarray:
    x = speed * TIMES
    return np.stack([x, np.zeros_like(x), np.zeros_like(x)], -1)


def fast_settings(server, **overrides):
    from sim.envs.backends.carla.settings import CarlaSettings

    values = {"port": server.port, "timeout_s": 0.5, "fixed_delta_s": 0.1, "sensor_timeout_s": 0.3, "warmup_ticks": 1}
    values.update(overrides)
    return CarlaSettings(**values)


def short_route_scene(short_route, town_dir):
    from scenarios.splits import resolve_split

    (ref,) = resolve_split(f"carla:{short_route}", town_dir=town_dir)
    return ref.load()


# --- the world read back every step -----------------------------------------------------------------------------------

def test_the_other_actors_are_still_seen_after_steps(make_env, server):
    env = make_env(cameras=False)
    env.reset(seed=0)
    for _ in range(2):
        env.step(straight(5.0))
    agents = env.unwrapped.sim.agents()
    background = {actor.id: actor for actor in server.client_actors() if actor.attributes.get("role_name") == "background"}
    assert background
    assert sorted(agents.track_ids) == sorted(f"carla:{i}" for i in background)
    for k, track in enumerate(agents.track_ids):
        location = background[int(track.split(":")[1])].get_transform().location
        assert (agents.x[k], agents.y[k]) == pytest.approx((location.x, -location.y), abs=1e-4)


def test_each_step_hands_the_red_light_monitor_the_poses_before_and_after_it_the_lights_and_the_hero(make_env, server):
    env = make_env(cameras=False)
    env.reset(seed=0)
    sim = env.unwrapped.sim
    monitor, calls = sim.criteria.red_lights, []
    update = monitor.update

    def recording(*args, **kwargs):
        calls.append((tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args), kwargs))
        return update(*args, **kwargs)

    monitor.update = recording
    before = sim.ego.copy()
    sim.plan(straight(5.0), 0.5)
    sim.step()  # one 0.1 s step of the simulator (an environment step is several)
    ((args, kwargs),) = calls
    assert kwargs == {} and len(args) == 4, (len(args), kwargs)
    previous, current, status, vehicle = args
    assert previous.tolist() == before.tolist()
    assert current.tolist() == sim.ego.tolist() and current.tolist() != before.tolist()
    assert status.tolist() == sim.light_status().tolist()
    assert vehicle is sim.vehicle  # the hero's measured size, not the default vehicle's


def test_a_scene_without_dense_route_points_is_driven_along_its_route_lanes(make_env, server, short_route, town_dir):
    scene = replace(short_route_scene(short_route, town_dir), route_points=None)
    env = make_env(cameras=False, scenes=[scene], split=None, town_dir=None)
    env.reset(seed=0)
    sim = env.unwrapped.sim
    # The hero stands on the lane, lifted 0.5 m above it: Town01 is flat, its lanes at z = 0.
    hero = [a for a in server.client_actors() if a.attributes.get("role_name") == "hero"]
    assert len(hero) == 1 and hero[0].get_transform().location.z == pytest.approx(0.5, abs=1e-6)
    # The route is the route's lanes (road 24 from y = -225 on, w0sim's frame), starting at the hero.
    assert abs(sim.route.points[0, 0] - 88.4) < 0.5 and sim.route.points[-1, 1] < -225.0 - 20.0
    _, reward, *_ = env.step(straight(5.0))
    assert reward > 0


# --- the PID follower -------------------------------------------------------------------------------------------------

def _controller(points, interval: float = 0.5) -> TrajectoryController:
    controller = TrajectoryController()
    controller.set_plan(np.array([[x, y, 0.0] for x, y in points]), interval)
    return controller


def test_trajectory_controller_throttle_below_the_clip_is_the_pids_output():
    ahead = [(2.0 * (k + 1), 0.0) for k in range(8)]  # 4 m/s
    control = _controller(ahead).control(np.zeros(3), 3.9)
    # speed error 0.1 (under the 0.25 clip): 5 * 0.1 + 0.5 * 0.1 / 20 + 1.0 * 0.1 = 0.6025 (under the 0.75 clip)
    assert control.throttle == pytest.approx(0.6025)
    assert (control.steer, control.brake) == (0.0, 0.0)


def test_trajectory_controller_aims_2_25_m_ahead_below_5_5_mps_and_3_m_ahead_above():
    # The first pose is 2.6 m away (2.4 ahead, 1.0 to the left): far enough below 5.5 m/s, too near above it.
    slow = [(2.4, 1.0)] + [(2.4 + 2.0 * k, 1.0) for k in range(1, 8)]  # 2 m between the 0.5 s and 1 s poses: 4 m/s
    steer = _controller(slow).control(np.zeros(3), 0.0).steer
    assert steer == pytest.approx(-LATERAL_FIRST_STEP * math.degrees(math.atan2(1.0, 2.4)) / 90.0)
    quick = [(2.4, 1.0)] + [(2.4 + 3.0 * k, 1.0) for k in range(1, 8)]  # 3 m: 6 m/s, aims at (5.4, 1.0)
    steer = _controller(quick).control(np.zeros(3), 0.0).steer
    assert steer == pytest.approx(-LATERAL_FIRST_STEP * math.degrees(math.atan2(1.0, 5.4)) / 90.0)


# --- what a failure is reported as ------------------------------------------------------------------------------------

def _refused(*args, **kwargs):
    raise RuntimeError("the server refused the request")


LOAD_WORLD = FakeClient.load_world


def _town02_instead(self, map_name, reset_settings=True, map_layers=carla.MapLayer.All):
    return LOAD_WORLD(self, "Town02", reset_settings, map_layers)


@pytest.mark.parametrize("target, replacement, message", [
    ((FakeClient, "load_world"), _town02_instead,
     "the CARLA server at localhost:{port} runs Town02, not Town01, after loading it"),
    ((FakeClient, "get_trafficmanager"), _refused,
     "starting the Traffic Manager on the CARLA server at localhost:{port}: the server refused the request"),
    ((FakeWorld, "try_spawn_actor"), _refused,
     "spawning the hero on the CARLA server at localhost:{port}: the server refused the request"),
], ids=["another-town", "traffic-manager", "hero-spawn"])
def test_a_failing_call_at_reset_is_a_simulation_crash_saying_what_was_being_done(make_env, server, monkeypatch, target,
                                                                                  replacement, message):
    env = make_env(cameras=False, carla=fast_settings(server))
    monkeypatch.setattr(*target, replacement)
    with pytest.raises(SimulationCrashed) as raised:
        env.reset(seed=0)
    assert str(raised.value) == message.format(port=server.port)
    assert env.unwrapped.sim is None
    server.assert_clean()


def test_a_first_tick_that_hangs_is_reported_as_the_first_tick(make_env, server):
    env = make_env(cameras=False, carla=fast_settings(server))
    server.inject("hang")  # the next tick: the first of the reset
    try:
        with pytest.raises(TickHung) as raised:
            env.reset(seed=0)
    finally:
        server.release()
    assert str(raised.value) == (f"the first tick on the CARLA server at localhost:{server.port} did not return "
                                 "within 1.5 s (the watchdog's limit)")  # the timeout, 0.5 s, and a second of grace


def test_a_sensor_that_cannot_be_stopped_is_a_cleanup_problem_naming_it(make_env, server, monkeypatch):
    env = make_env(cameras=False)
    env.reset(seed=0)

    def refuse(self):
        raise RuntimeError("stop refused")

    monkeypatch.setattr(FakeSensor, "stop", refuse)
    with pytest.warns(CleanupWarning) as caught:
        env.close()
    problems = ["stopping a sensor: stop refused"] * 2  # the collision and the lane invasion sensors
    assert env.unwrapped.cleanup_problems == problems
    assert [str(w.message) for w in caught if issubclass(w.category, CleanupWarning)] == [
        f"cleaning up the route on the CARLA server at localhost:{server.port}: " + "; ".join(problems)]
    server.assert_clean()  # the rest of the clean-up went on


# --- the backend's own refusals ---------------------------------------------------------------------------------------

def test_a_scene_of_no_carla_town_is_refused_naming_it(short_route, town_dir, settings):
    scene = short_route_scene(short_route, town_dir)
    scene = replace(scene, metadata={k: v for k, v in scene.metadata.items() if k != "town"})
    with pytest.raises(ValueError) as raised:
        CarlaSimulator(scene, settings, client_factory=FakeClient)
    assert str(raised.value) == (f"scene {scene.token} is not from a CARLA town (no metadata['town']); the CARLA backend "
                                 "drives Leaderboard routes (carla:ROUTES.xml, scenarios.route_scenes.route_scene)")


def test_a_step_with_neither_a_plan_nor_a_control_is_refused(make_env, server):
    env = make_env(cameras=False)
    env.reset(seed=0)
    with pytest.raises(RuntimeError) as raised:
        env.unwrapped.sim.step()
    assert str(raised.value) == "CarlaSimulator.step: call plan() first or pass a control"
