"""`w0sim/Carla-v0` and its CARLA backend (sim/envs/backends/carla/) against the FAKE CARLA server
(tests/fakes/carla_server.py): the Gymnasium API, connecting, the frames (CARLA left-handed, w0sim right-handed), the
controls, the cleanup after every route, failures of the server, Ctrl-C, collisions in the route record. The backend's
parts that need no server are tested in tests/envs/test_carla_backend_parts.py.

Expected values are worked out by hand or from CARLA's conventions (y to the right, yaw clockwise in degrees, steer
positive to the right, BGRA images), not read back from the code under test."""
from __future__ import annotations

import math
import os
import shlex
import signal
import socket
import threading
import time
import warnings

import numpy as np
import pytest

carla = pytest.importorskip("carla", reason="the fake CARLA server needs the carla client package (pip install 'w0sim[carla]')")

import gymnasium as gym  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import sim.envs  # noqa: E402,F401 - registers the ids
from sim.envs.backends.carla.connection import CarlaVersionError, CarlaVersionWarning  # noqa: E402
from sim.envs.backends.carla.settings import CarlaSettings  # noqa: E402
from sim.envs.backends.failures import SimulationCrashed, SimulatorUnavailable  # noqa: E402
from sim.envs.carla_env import CarlaEnv, CleanupWarning  # noqa: E402
from sim.state import AgentType, TrafficLightStatus  # noqa: E402
from tests.carla_server.conftest import SHORT_ROUTE_LANE_YAW_DEG, SHORT_ROUTE_START  # noqa: E402
from tests.fakes.carla_server import FakeCarlaServer, FakeClient, FakeWorld, install  # noqa: E402

SIMULATION_CRASHED = "Failed - Simulation crashed"  # the record's status; its external failure is "Simulation crashed"
TIMES = (np.arange(8) + 1) * 0.5  # the default trajectory sampling: 8 poses, 0.5 s apart
LANE_HEADING = -math.radians(SHORT_ROUTE_LANE_YAW_DEG)  # the route's lane in w0sim's frame (about -pi/2)


# --- helpers ---------------------------------------------------------------------------------------------------------

def straight(speed: float) -> np.ndarray:
    """(8, 3) poses straight ahead at `speed` m/s, in the ego frame."""
    x = speed * TIMES
    return np.stack([x, np.zeros_like(x), np.zeros_like(x)], -1)


def curve(speed: float, bend: float) -> np.ndarray:
    """(8, 3) poses along y = bend * x^2 in the ego frame (bend > 0: to the LEFT, w0sim's y being to the left)."""
    x = speed * TIMES
    return np.stack([x, bend * x**2, np.arctan(2 * bend * x)], -1)


def wrap(angle: float) -> float:
    return math.remainder(angle, 2 * math.pi)


def cross(a, b) -> float:
    """The z of a x b for 2-D vectors: positive when b is to the left of a."""
    return float(a[0] * b[1] - a[1] * b[0])


def hero_of(server: FakeCarlaServer):
    heroes = [a for a in server.client_actors() if a.attributes.get("role_name") == "hero"]
    assert len(heroes) == 1, [(a.id, a.type_id, a.attributes.get("role_name")) for a in server.client_actors()]
    return heroes[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fast(server: FakeCarlaServer, **overrides) -> CarlaSettings:
    """Settings with short time-outs for the failure tests."""
    values = {"port": server.port, "timeout_s": 0.5, "fixed_delta_s": 0.1, "sensor_timeout_s": 0.3, "warmup_ticks": 1}
    values.update(overrides)
    return CarlaSettings(**values)


# --- 1. the Gymnasium API ---------------------------------------------------------------------------------------------

# check_env makes a second environment on the same server, whose reset loads the town anew: the first one's route is
# gone when it is reset again, and its clean-up warns about the expired episode.
@pytest.mark.filterwarnings("ignore::sim.envs.carla_env.CleanupWarning")
@pytest.mark.parametrize("cameras", [True, False], ids=["cameras", "no-cameras"])
def test_the_environment_passes_gymnasiums_checker_and_leaves_the_server_clean(make_env, server, cameras):
    env = make_env(cameras=cameras)
    space = env.observation_space
    if cameras:
        assert space["cameras"].shape == (4, 128, 256, 3) and space["cameras"].dtype == np.uint8
    else:
        assert "cameras" not in space.spaces
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert space.contains(obs)
    if cameras:
        assert obs["cameras"].shape == (4, 128, 256, 3) and obs["cameras"].dtype == np.uint8
    env.close()
    server.assert_clean()
    assert not server.synchronous and not server.tm_synchronous
    assert env.unwrapped.cleanup_problems == []


# --- 2. connecting ----------------------------------------------------------------------------------------------------

def _assert_unavailable_in_time(make, port: int, timeout_s: float) -> None:
    started = time.monotonic()
    with pytest.raises(SimulatorUnavailable) as raised:
        make()
    elapsed = time.monotonic() - started
    assert f"localhost:{port}" in str(raised.value)
    assert 0.8 * timeout_s <= elapsed < timeout_s + 1.5, elapsed


def test_no_server_raises_simulator_unavailable_naming_the_address_within_the_timeout(short_route, town_dir):
    port = free_port()  # the REAL carla.Client: nothing listens there
    _assert_unavailable_in_time(lambda: gym.make("w0sim/Carla-v0", split=f"carla:{short_route}", town_dir=town_dir,
                                                 port=port, timeout_s=0.5), port, 0.5)
    _assert_unavailable_in_time(lambda: CarlaEnv(split=f"carla:{short_route}", town_dir=town_dir,
                                                 carla=CarlaSettings(port=port, timeout_s=0.5)), port, 0.5)


def test_no_fake_server_raises_simulator_unavailable_within_the_timeout(short_route, town_dir, monkeypatch):
    install(monkeypatch)  # carla.Client is the fake client, and no fake server is started on the port
    port = free_port()
    _assert_unavailable_in_time(lambda: gym.make("w0sim/Carla-v0", split=f"carla:{short_route}", town_dir=town_dir,
                                                 port=port, timeout_s=0.5), port, 0.5)


def test_a_server_gone_before_reset_raises_simulator_unavailable_from_reset(make_env, server):
    env = make_env(carla=fast(server))
    server.stop()
    started = time.monotonic()
    with pytest.raises(SimulatorUnavailable, match=f"localhost:{server.port}"):
        env.reset(seed=0)
    assert time.monotonic() - started < 0.5 + 1.5
    started = time.monotonic()
    env.close()
    assert time.monotonic() - started < 0.5 + 1.5


@pytest.mark.parametrize("version", ["0.9.15", "0.9.15-dirty"])
def test_a_supported_server_of_another_release_than_the_client_warns(town_dir, short_route, version):
    assert FakeClient().get_client_version().startswith("0.9.16")
    with FakeCarlaServer(town_dir, port=2999, version=version) as srv:
        with pytest.warns(CarlaVersionWarning, match="0.9.15"):
            env = gym.make("w0sim/Carla-v0", split=f"carla:{short_route}", town_dir=town_dir,
                           carla=CarlaSettings(port=srv.port, timeout_s=1.0), client_factory=FakeClient)
        env.close()


def test_the_clients_own_release_does_not_warn(town_dir, short_route):
    with FakeCarlaServer(town_dir, port=2998, version="0.9.16-dirty") as srv, warnings.catch_warnings():
        warnings.simplefilter("error", CarlaVersionWarning)
        env = gym.make("w0sim/Carla-v0", split=f"carla:{short_route}", town_dir=town_dir,
                       carla=CarlaSettings(port=srv.port, timeout_s=1.0), client_factory=FakeClient)
        env.close()


def test_an_unsupported_server_version_is_refused_naming_it(town_dir, short_route):
    with FakeCarlaServer(town_dir, port=2997, version="0.10.0") as srv:
        with pytest.raises(CarlaVersionError, match=r"0\.10\.0") as raised:
            gym.make("w0sim/Carla-v0", split=f"carla:{short_route}", town_dir=town_dir,
                     carla=CarlaSettings(port=srv.port, timeout_s=1.0), client_factory=FakeClient)
        assert f"localhost:{srv.port}" in str(raised.value)
        srv.assert_clean()


# --- 4. frames and controls -------------------------------------------------------------------------------------------

def test_reset_puts_the_hero_at_the_routes_start_in_both_frames(make_env, server):
    env = make_env(cameras=False)
    env.reset(seed=0)
    ego, start = env.unwrapped.sim.ego, env.unwrapped.scene.initial_ego_state
    assert abs(ego[0] - start[0]) < 0.3 and abs(ego[1] - start[1]) < 0.3
    assert abs(wrap(ego[2] - start[2])) < 0.02
    # Independently of the scene: the route file's start mirrored into w0sim's frame (x, -y, -radians(yaw)).
    assert abs(ego[0] - SHORT_ROUTE_START[0]) < 0.3
    assert -SHORT_ROUTE_START[1] - 2.0 < ego[1] < -SHORT_ROUTE_START[1] + 0.3  # at most a little ahead along -y
    assert abs(wrap(ego[2] - LANE_HEADING)) < 0.02
    assert ego[3] == pytest.approx(0.0, abs=1e-6)
    # The server's side, in CARLA's frame: the hero stands on the lane (positive y) facing +y (yaw +90 degrees), its
    # centre ahead of w0sim's rear-axle pose, lifted 0.5 m above the route as the Leaderboard spawns it.
    hero = hero_of(server).get_transform()
    assert abs(wrap(math.radians(hero.rotation.yaw - SHORT_ROUTE_LANE_YAW_DEG))) < math.radians(0.5)
    centre = np.array([hero.location.x, -hero.location.y])
    forward = np.array([math.cos(ego[2]), math.sin(ego[2])])
    along, across = float((centre - ego[:2]) @ forward), cross(forward, centre - ego[:2])
    assert 0.5 < along < 2.0 and abs(across) < 0.05, (along, across)
    assert hero.location.z == pytest.approx(0.5, abs=1e-6)


def test_a_straight_trajectory_drives_forward_along_the_heading_and_the_route(make_env, server):
    env = make_env(cameras=False)
    env.reset(seed=0)
    sim = env.unwrapped.sim
    heading = sim.ego[2]
    forward = np.array([math.cos(heading), math.sin(heading)])
    before, progress = sim.ego[:2].copy(), [0.0]
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(straight(5.0))
        assert not (terminated or truncated)
        moved = sim.ego[:2] - before
        assert moved @ forward > 0.2, moved
        assert abs(cross(forward, moved)) < 0.05, moved
        assert reward > 0
        progress.append(info["route_progress_m"])
        before = sim.ego[:2].copy()
    assert all(b > a for a, b in zip(progress, progress[1:])), progress
    assert abs(wrap(sim.ego[2] - heading)) < 0.01
    # The velocity in the ego frame: forward is the server's speed, nothing sideways.
    velocity = hero_of(server).get_velocity()
    assert sim.ego[3] == pytest.approx(math.hypot(velocity.x, velocity.y), rel=1e-6) and sim.ego[3] > 1.0
    assert sim.ego[4] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("side", [1, -1], ids=["left", "right"])
def test_a_curving_trajectory_turns_the_hero_to_that_side(make_env, server, side):
    env = make_env(cameras=False)
    env.reset(seed=0)
    sim = env.unwrapped.sim
    heading = sim.ego[2]
    for _ in range(2):
        env.step(curve(4.0, side * 0.08))
    turned = wrap(sim.ego[2] - heading)
    assert side * turned > 0.05, turned  # left: counter-clockwise, w0sim's heading grows
    assert side * sim.ego[9] > 0, sim.ego[9]  # the yaw rate, counter-clockwise positive
    hero = hero_of(server)
    assert side * hero.get_control().steer < 0  # CARLA's steer is positive to the RIGHT
    assert side * (hero.get_transform().rotation.yaw - SHORT_ROUTE_LANE_YAW_DEG) < -1.0  # CARLA's yaw is clockwise


def test_direct_control_maps_acceleration_and_steering_rate_to_carlas_control(make_env, server):
    env = make_env(cameras=False, control="direct")
    env.reset(seed=0)
    sim = env.unwrapped.sim
    heading = sim.ego[2]
    env.step(np.array([2.0, 0.5]))
    control = hero_of(server).get_control()
    assert control.throttle == pytest.approx(0.5) and control.brake == 0.0  # 2 m/s^2 of 4 at full throttle
    assert control.steer == pytest.approx(-0.05 / math.radians(70.0), rel=1e-4)  # 0.05 rad to the left
    assert sim.ego[7] == pytest.approx(0.05, rel=1e-4)  # w0sim's wheel angle, positive to the left
    assert sim.ego[3] > 0
    for _ in range(3):
        env.step(np.array([2.0, 0.5]))
    assert wrap(sim.ego[2] - heading) > 0.005
    env.step(np.array([-4.0, 0.0]))
    control = hero_of(server).get_control()
    assert control.brake == pytest.approx(0.5) and control.throttle == 0.0  # 4 m/s^2 of 8 at full brake
    assert control.steer == pytest.approx(-0.2 / math.radians(70.0), rel=1e-4)  # the angle is held, not reset


def test_a_step_is_a_whole_number_of_synchronous_ticks(make_env, server):
    env = make_env(cameras=False, carla=CarlaSettings(port=server.port, timeout_s=1.0, fixed_delta_s=0.05,
                                                      sensor_timeout_s=0.5, warmup_ticks=3, traffic_manager_seed=42))
    env.reset(seed=0)
    assert server.synchronous and server.tm_synchronous
    assert server.settings.fixed_delta_seconds == pytest.approx(0.05)
    tm_calls = server.client().get_trafficmanager(8000).calls
    assert ("set_random_device_seed", (42,)) in tm_calls and ("set_synchronous_mode", (True,)) in tm_calls
    ticks = server.ticks
    _, _, _, _, info = env.step(straight(5.0))
    assert server.ticks - ticks == 5 * 2  # 5 steps of 0.1 s, 2 ticks of 0.05 s each
    assert info["time_s"] == pytest.approx(0.5)


def test_the_camera_is_the_servers_image_in_rgb(make_env, server):
    env = make_env()
    obs, _ = env.reset(seed=0)
    # The fake paints the sky BGRA (235, (206 + tint) % 256, (135 + 2 tint) % 256, 255), tint = int(yaw / 360 * 255):
    # the front camera looks along yaw 89.99, tint 63, so RGB (5, 13, 235) at the top left.
    assert obs["cameras"][-1][0, 0].tolist() == [5, 13, 235]
    obs, *_ = env.step(straight(5.0))
    assert obs["cameras"][-1][0, 0].tolist() == [5, 13, 235]
    # The camera sits where w0sim's rig has it: 1.5 m ahead of the rear axle, on the centre line, 1.6 m up, level.
    ego, config = env.unwrapped.sim.ego, env.unwrapped.camera
    (camera,) = [a for a in server.client_actors() if a.type_id == "sensor.camera.rgb"]
    where = camera.get_transform()
    offset = np.array([where.location.x, -where.location.y]) - ego[:2]
    forward = np.array([math.cos(ego[2]), math.sin(ego[2])])
    assert float(offset @ forward) == pytest.approx(config.mount_x, abs=0.05) and abs(cross(forward, offset)) < 0.05
    assert where.location.z - hero_of(server).get_transform().location.z == pytest.approx(config.mount_z, abs=1e-3)
    assert where.rotation.pitch == pytest.approx(-math.degrees(config.pitch), abs=1e-3)
    assert float(camera.attributes["fov"]) == pytest.approx(math.degrees(2 * math.atan(config.width / (2 * config.focal))),
                                                          abs=1e-3)


def test_the_lights_are_the_servers_by_opendrive_id(make_env, server):
    env = make_env(cameras=False)
    env.reset(seed=0)
    scene, sim = env.unwrapped.scene, env.unwrapped.sim
    state = carla.TrafficLightState
    expected = {f"tl_{light.get_opendrive_id()}": {state.Red: TrafficLightStatus.RED, state.Yellow: TrafficLightStatus.YELLOW,
                                                   state.Green: TrafficLightStatus.GREEN}[light.get_state()]
                for light in server.traffic_lights()}
    assert set(scene.light_ids) <= set(expected)
    assert sim.light_status().tolist() == [int(expected[i]) for i in scene.light_ids]
    assert len(set(sim.light_status().tolist())) > 1  # not all one colour: the comparison means something


def test_the_other_actors_are_seen_in_w0sims_frame(make_env, server):
    env = make_env(cameras=False)
    env.reset(seed=0)
    sim = env.unwrapped.sim
    agents = sim.agents()
    background = [a for a in server.client_actors() if a.attributes.get("role_name") == "background"]
    assert background and len(agents.track_ids) == len(background)
    for actor in background:
        k = agents.track_ids.index(f"carla:{actor.id}")
        transform = actor.get_transform()
        assert agents.x[k] == pytest.approx(transform.location.x, abs=1e-4)
        assert agents.y[k] == pytest.approx(-transform.location.y, abs=1e-4)
        assert abs(wrap(agents.heading[k] + math.radians(transform.rotation.yaw))) < 1e-4
        assert agents.agent_type[k] == AgentType.VEHICLE
        velocity = actor.get_velocity()
        assert (agents.vx[k], agents.vy[k]) == pytest.approx((velocity.x, -velocity.y), abs=1e-6)
        # On the autopilot, along the lane: the velocity points along the heading in w0sim's frame too.
        assert agents.vx[k] * math.cos(agents.heading[k]) + agents.vy[k] * math.sin(agents.heading[k]) > 0.1
    assert max(abs(agents.vy)) > 0.1  # some drive along y, where a missing flip would show
    # Spawned where the scene has its road users (w0sim's frame), less what the autopilot drove in the warm-up.
    scene_agents = env.unwrapped.scene.agents.at(env.unwrapped.scene.current_index)
    for k in range(len(agents.track_ids)):
        assert np.min(np.hypot(scene_agents.x - agents.x[k], scene_agents.y - agents.y[k])) < 1.0


# --- 5. actors of a route ---------------------------------------------------------------------------------------------

def test_every_reset_destroys_the_previous_routes_actors(make_env, server):
    env = make_env()
    env.reset(seed=0)
    first = len(server.client_actors())
    assert first >= 4  # the hero, its camera, collision and lane invasion sensors, and traffic
    env.step(straight(5.0))
    env.reset(seed=0)
    assert len(server.client_actors()) == first
    # The backend destroyed them itself: none vanished with the next load of the town.
    assert server.stats.lost == 0 and server.stats.destroyed == first
    env.close()
    assert server.client_actors() == []
    assert server.stats.lost == 0 and server.stats.destroyed == 2 * first
    server.assert_clean()


# --- 6. failures of the server ----------------------------------------------------------------------------------------

def _crash_in_step(make_env, server, kind: str):
    """Reset, inject `kind` at the 3rd tick of the first step, step: (the error, seconds the step took, tick injected)."""
    env = make_env(carla=fast(server))
    env.reset(seed=0)
    at = server.ticks + 3
    server.inject(kind, at_tick=at)
    started = time.monotonic()
    with pytest.raises(SimulationCrashed) as raised:
        env.step(straight(5.0))
    return env, raised.value, time.monotonic() - started, at


@pytest.mark.parametrize("kind", ["timeout", "hang", "drop_sensor_frame", "die"])
def test_a_server_failure_in_step_raises_simulation_crashed_saying_what_failed(make_env, server, kind):
    env, error, elapsed, at = _crash_in_step(make_env, server, kind)
    settings = env.unwrapped.carla
    message = str(error)
    if kind in ("timeout", "die"):
        assert "ticking" in message and "time-out" in message and f"localhost:{server.port}" in message, message
        assert settings.timeout_s * 0.8 <= elapsed < settings.timeout_s + 2.0
    elif kind == "hang":
        assert f"tick after frame {at - 1}" in message and "did not return" in message, message
        assert settings.timeout_s <= elapsed < settings.timeout_s + 2.0
    else:
        assert f"frame {at}" in message and "front" in message, message
        assert settings.sensor_timeout_s * 0.8 <= elapsed < settings.sensor_timeout_s + 2.0
    record = env.unwrapped.crash_record("Simulation crashed")
    assert record["status"] == SIMULATION_CRASHED
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.close()
    assert time.monotonic() - started < settings.timeout_s + 2.0  # a dead or hung server does not hang the clean-up
    cleanup = [str(w.message) for w in caught if issubclass(w.category, CleanupWarning)]
    if kind == "die":  # nothing could be cleaned up on a dead server, and the user is told
        assert len(cleanup) == 1 and "did not answer" in cleanup[0], cleanup
        server.revive()
        server.assert_clean()
    else:  # the server is alive (one RPC timed out, a tick hung, a frame was lost): everything is cleaned up
        assert cleanup == [] and env.unwrapped.cleanup_problems == []
        server.assert_clean()


def test_a_spawn_collision_at_reset_raises_simulation_crashed_and_leaves_nothing(make_env, server):
    env = make_env(carla=fast(server))
    server.inject("spawn_collision")
    with pytest.raises(SimulationCrashed, match="spawn collision"):
        env.reset(seed=0)
    server.assert_clean()  # before close: the failed reset cleaned up after itself
    assert env.unwrapped.sim is None
    env.close()
    server.assert_clean()
    env.reset(seed=0)  # the next reset works
    assert hero_of(server)


# --- 7. Ctrl-C --------------------------------------------------------------------------------------------------------

def test_a_keyboard_interrupt_during_a_tick_is_cleaned_up_by_close(make_env, server, monkeypatch):
    env = make_env()
    env.reset(seed=0)
    tick, calls = FakeWorld.tick, []

    def interrupted_tick(self, seconds=0.0):
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return tick(self, seconds)

    monkeypatch.setattr(FakeWorld, "tick", interrupted_tick)
    try:
        with pytest.raises(KeyboardInterrupt):
            env.step(straight(5.0))
    finally:
        env.close()
    assert len(calls) >= 3
    server.assert_clean()
    assert env.unwrapped.cleanup_problems == []


def test_a_keyboard_interrupt_during_reset_is_cleaned_up_by_the_reset_itself(make_env, server, monkeypatch):
    env = make_env()
    tick, calls = FakeWorld.tick, []

    def interrupted_tick(self, seconds=0.0):
        calls.append(seconds)
        if len(calls) == 2:  # the warm-up tick: the hero, its sensors and the traffic are on the server by then
            assert len(server.client_actors()) > 4
            raise KeyboardInterrupt
        return tick(self, seconds)

    monkeypatch.setattr(FakeWorld, "tick", interrupted_tick)
    with pytest.raises(KeyboardInterrupt):
        env.reset(seed=0)
    assert env.unwrapped.sim is None  # nothing for close to clean: the half-made route cleaned up after itself
    server.assert_clean()


def test_a_real_sigint_while_waiting_for_a_sensor_frame_is_cleaned_up_by_close(make_env, server):
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("needs the main thread and Python's own SIGINT handler")
    env = make_env(carla=fast(server, sensor_timeout_s=5.0))
    env.reset(seed=0)
    server.inject("drop_sensor_frame", at_tick=server.ticks + 2)  # the step then waits for that frame for 5 s
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            env.step(straight(5.0))
        assert time.monotonic() - started < 2.0
    finally:
        timer.cancel()
        env.close()
    server.assert_clean()


def _route_ref(short_route, town_dir):
    from scenarios.splits import resolve_split

    (ref,) = resolve_split(f"carla:{short_route}", town_dir=town_dir)
    return ref


def test_drive_route_cleans_up_when_the_agent_is_interrupted(short_route, town_dir, server, settings, monkeypatch):
    from tests.carla_server.agents import RouteTracerAgent
    from w0sim.closed_loop import drive_route

    class Interrupted(RouteTracerAgent):
        decisions = 0

        def compute_trajectory(self, agent_input, world=None):
            Interrupted.decisions += 1
            if Interrupted.decisions == 3:
                raise KeyboardInterrupt
            return super().compute_trajectory(agent_input, world)

    install(monkeypatch)
    ticks = server.ticks
    with pytest.raises(KeyboardInterrupt):
        drive_route(_route_ref(short_route, town_dir), 0, Interrupted(), carla=settings)
    assert Interrupted.decisions == 3 and server.ticks - ticks > 10  # it was mid-route
    server.assert_clean()


def test_drive_route_drives_the_short_route_to_its_end_and_cleans_up(short_route, town_dir, server, settings, monkeypatch):
    from tests.carla_server.agents import RouteTracerAgent
    from w0sim.closed_loop import drive_route

    install(monkeypatch)
    row = drive_route(_route_ref(short_route, town_dir), 0, RouteTracerAgent(), carla=settings)
    record = row["record"]
    assert record["status"] in ("Completed", "Perfect") and record["scores"]["score_route"] == 100
    assert "rerun" not in row
    server.assert_clean()


def test_drive_route_records_a_dead_server_as_a_simulation_crash_to_rerun(short_route, town_dir, server, monkeypatch):
    from tests.carla_server.agents import RouteTracerAgent
    from w0sim.closed_loop import drive_route

    install(monkeypatch)
    server.inject("die", at_tick=25)  # mid-route: reset takes 2 ticks, each decision 5
    with pytest.warns(CleanupWarning, match="did not answer"):  # nothing could be cleaned up on the dead server
        row = drive_route(_route_ref(short_route, town_dir), 0, RouteTracerAgent(), carla=fast(server))
    assert row["record"]["status"] == SIMULATION_CRASHED and row["rerun"] is True
    assert "time-out" in row["reason"]
    assert 0 < row["record"]["scores"]["score_route"] < 100  # what was driven before the crash is kept
    server.revive()
    server.assert_clean()


def test_drive_route_restarts_a_dead_server_with_the_restart_command(short_route, town_dir, server, tmp_path, monkeypatch):
    from tests.carla_server.agents import RouteTracerAgent
    from w0sim.closed_loop import drive_route

    install(monkeypatch)
    marker = tmp_path / "restart-me"
    server.restart_marker(marker)  # the fake revives when a client finds this file, as a restart script would do
    server.inject("die", at_tick=25)
    settings = fast(server, restart_command=f"touch {shlex.quote(str(marker))}", restart_wait_s=5.0)
    with pytest.warns(CleanupWarning, match="did not answer"):
        row = drive_route(_route_ref(short_route, town_dir), 0, RouteTracerAgent(), carla=settings)
    assert row["record"]["status"] == SIMULATION_CRASHED and row["rerun"] is True
    assert "restarting the server failed" not in row["reason"]
    assert not server.dead and server.stats.revives == 1 and not marker.exists()
    server.assert_clean()


def test_a_hero_gone_from_the_server_mid_route_is_a_simulation_crash(make_env, server):
    env = make_env(cameras=False)
    env.reset(seed=0)
    hero_of(server).destroy()  # e.g. the server or a scenario removed it
    with pytest.raises(SimulationCrashed):
        env.step(straight(5.0))


# --- 9. collisions ----------------------------------------------------------------------------------------------------

def _drive_into_a_parked_vehicle(make_env, server):
    """Park a vehicle 12 m ahead of the hero (another client's actor, no autopilot) and drive through it (the fake has
    no contact physics) until the route is truncated; (every step's info, the parked actor)."""
    env = make_env(cameras=False, max_time_s=4.0, carla=CarlaSettings(port=server.port, timeout_s=1.0, fixed_delta_s=0.1,
                                                                     sensor_timeout_s=0.5, warmup_ticks=1,
                                                                     background_traffic=False))
    env.reset(seed=0)
    hero = hero_of(server).get_transform()
    yaw = math.radians(hero.rotation.yaw)
    world = server.client().get_world()
    blueprint = world.get_blueprint_library().find("vehicle.tesla.model3")
    blueprint.set_attribute("role_name", "scenario")
    parked = world.spawn_actor(blueprint, carla.Transform(
        carla.Location(x=hero.location.x + 12 * math.cos(yaw), y=hero.location.y + 12 * math.sin(yaw), z=hero.location.z),
        hero.rotation))
    infos, done = [], False
    while not done:
        _, _, terminated, truncated, info = env.step(straight(5.0))
        infos.append(info)
        done = terminated or truncated
    env.close()
    assert server.client_actors() == [parked]  # the backend destroys its own actors only
    parked.destroy()
    server.assert_clean()
    return infos, parked


def test_a_collision_sensor_event_reaches_the_step_events_and_the_route_record(make_env, server):
    infos, parked = _drive_into_a_parked_vehicle(make_env, server)
    hits = [c for info in infos for events in info["events"] for c in events["collisions"]]
    assert len(hits) == 1, hits
    assert hits[0]["type_id"] == "vehicle.tesla.model3" and hits[0]["type_id"].startswith("vehicle.")
    assert hits[0]["actor_id"] == parked.id
    assert infos[-1]["collisions"] == 1
    messages = infos[-1]["route_record"]["infractions"]["collisions_vehicle"]
    assert len(messages) == 1 and f"type=vehicle.tesla.model3 and id={parked.id}" in messages[0], messages
    for key in ("collisions_layout", "collisions_pedestrian"):
        assert infos[-1]["route_record"]["infractions"][key] == []


def test_a_collision_with_a_vehicle_is_typed_vehicle_in_the_step_events(make_env, server):
    infos, _ = _drive_into_a_parked_vehicle(make_env, server)
    hits = [c for info in infos for events in info["events"] for c in events["collisions"]]
    assert [c["agent_type"] for c in hits] == ["vehicle"]


def test_info_counts_the_background_traffic_spawned_and_the_lane_markings_crossed(make_env, server):
    """`background_traffic` at reset is the number of road users on the server besides the hero; `lane_invasions`
    stays 0 while the hero keeps its lane and grows once it swerves into the opposite lane (road 24's lane 1)."""
    env = make_env(cameras=False)
    _, info = env.reset(seed=0)
    others = [a for a in server.client_actors() if a.type_id.startswith("vehicle.") and a.attributes["role_name"] != "hero"]
    assert info["background_traffic"] == len(others) > 0
    for _ in range(2):
        _, _, _, _, info = env.step(straight(5.0))
    assert info["lane_invasions"] == 0
    for _ in range(4):
        _, _, terminated, truncated, info = env.step(curve(5.0, 0.08))
        if terminated or truncated:
            break
    assert info["lane_invasions"] >= 1
