"""Tests of the FAKE CARLA server (tests/fakes/carla_server.py): the behaviour a backend test relies on."""
from __future__ import annotations

import itertools
import math
import threading
import time

import carla
import pytest

from tests.fakes import carla_server as fake
from tests.fakes.carla_server import (
    EXPIRED_EPISODE,
    SPAWN_COLLISION,
    FakeClient,
    FakeCollisionEvent,
    FakeImage,
    serving,
    shared_town_dir,
    timeout_message,
)
from tests.fakes.fake_carla import geometry

_PORTS = itertools.count(2300)
SHORT = 0.1   # client time-out used by the tests (s)


@pytest.fixture(scope="module")
def town_dir():
    return shared_town_dir()


@pytest.fixture
def server(town_dir):
    with serving(town_dir, port=next(_PORTS), hang_limit_s=10.0) as srv:
        yield srv


@pytest.fixture
def client(server):
    c = FakeClient("localhost", server.port)
    c.set_timeout(SHORT)
    return c


def _sync(world, dt=0.05):
    settings = world.get_settings()
    settings.synchronous_mode = True
    settings.fixed_delta_seconds = dt
    world.apply_settings(settings)


def _async(world):
    settings = world.get_settings()
    settings.synchronous_mode = False
    settings.fixed_delta_seconds = None
    world.apply_settings(settings)


_STRAIGHT: dict[str, carla.Transform] = {}


def _straight_start(world) -> carla.Transform:
    """A lane-centre transform of the map with 35 m of its road behind and 40 m of straight road ahead."""
    carla_map = world.get_map()
    if carla_map.name not in _STRAIGHT:
        for wp in carla_map.generate_waypoints(2.0):
            if wp.is_junction or wp.lane_type != carla.LaneType.Driving:
                continue
            ahead, behind = wp.next(40.0), wp.previous(35.0)
            if ahead and behind and ahead[0].road_id == wp.road_id == behind[0].road_id and \
                    carla_map.get_waypoint(wp.transform.location).road_id == wp.road_id and \
                    abs(geometry._wrap_deg(ahead[0].transform.rotation.yaw - wp.transform.rotation.yaw)) < 0.5:
                _STRAIGHT[carla_map.name] = wp.transform
                break
    start = _STRAIGHT[carla_map.name]
    return carla.Transform(carla.Location(x=start.location.x, y=start.location.y, z=start.location.z + 0.1),
                           carla.Rotation(yaw=start.rotation.yaw))


def _spawn(world, bp_id, transform, role="autopilot", attach_to=None):
    bp = world.get_blueprint_library().find(bp_id)
    bp.set_attribute("role_name", role)
    return world.spawn_actor(bp, transform, attach_to=attach_to)


def _offset(transform, forward=0.0, right=0.0, yaw=0.0):
    fx, fy = geometry._forward(transform.rotation.yaw)
    loc = transform.location
    return carla.Transform(carla.Location(x=loc.x + forward * fx - right * fy, y=loc.y + forward * fy + right * fx, z=loc.z),
                           carla.Rotation(yaw=transform.rotation.yaw + yaw))


# ----------------------------------------------------------------------------------------------------------------------
# Client and registry

def test_no_server_times_out_with_carlas_exact_text():
    port = next(_PORTS)
    client = FakeClient("localhost", port)          # construction never fails, as the real client's
    client.set_timeout(0.2)
    assert client.get_timeout() == pytest.approx(0.2)
    start = time.monotonic()
    with pytest.raises(RuntimeError) as error:
        client.get_server_version()
    elapsed = time.monotonic() - start
    assert str(error.value) == ("time-out of 200ms while waiting for the simulator, make sure the simulator is ready and "
                                f"connected to localhost:{port}")
    assert 0.19 <= elapsed < 1.0
    assert timeout_message(0.5, "localhost", 2999) == ("time-out of 500ms while waiting for the simulator, make sure the "
                                                       "simulator is ready and connected to localhost:2999")


def test_stopped_server_is_unreachable_and_versions(town_dir):
    port = next(_PORTS)
    with serving(town_dir, port=port, version="0.9.16") as srv:
        client = FakeClient("127.0.0.1", port)      # localhost and 127.0.0.1 are the same host
        client.set_timeout(SHORT)
        assert client.get_server_version() == "0.9.16"
        assert client.get_client_version() == carla.libcarla.Client("localhost", 1).get_client_version()
        with pytest.raises(RuntimeError, match="already listens"):
            fake.FakeCarlaServer(town_dir, port=port).start()
    assert not srv.started
    with pytest.raises(RuntimeError, match=f"connected to 127.0.0.1:{port}"):
        client.get_world()


def test_install_and_factory(monkeypatch):
    assert fake.install(monkeypatch) is FakeClient
    assert carla.Client is FakeClient and fake.fake_client_factory is FakeClient


def test_load_world_maps_and_expired_episode(server, client):
    maps = client.get_available_maps()
    assert "/Game/Carla/Maps/Town01" in maps and "/Game/Carla/Maps/Town02" in maps
    world = client.get_world()
    assert world.get_map().name.split("/")[-1] == "Town01"
    world2 = client.load_world("/Game/Carla/Maps/Town02")
    assert world2.get_map().name.split("/")[-1] == "Town02" and world2.id != world.id
    assert client.get_world() == world2
    with pytest.raises(RuntimeError, match="expired episode"):
        world.get_settings()
    with pytest.raises(RuntimeError, match="map not found"):
        client.load_world("Town99")
    assert server.town == "Town02" and server.stats.loads == 1
    assert fake.load_map(server.town_dir / "Town02.xodr") is world2.get_map()    # parsed once per process


def test_settings_persist_or_reset_across_loads(client):
    world = client.get_world()
    _sync(world, 0.1)
    world = client.load_world("Town02", reset_settings=False)
    settings = world.get_settings()
    assert settings.synchronous_mode and settings.fixed_delta_seconds == pytest.approx(0.1)
    world = client.load_world("Town01")
    settings = world.get_settings()
    assert not settings.synchronous_mode and settings.fixed_delta_seconds is None


def test_sync_tick_advances_frame_and_elapsed(client):
    world = client.get_world()
    _sync(world, 0.1)
    first = world.get_snapshot()
    frames = [world.tick() for _ in range(3)]
    assert frames == [first.frame + 1, first.frame + 2, first.frame + 3]
    snap = world.get_snapshot()
    assert snap.frame == frames[-1] and snap.timestamp.frame == frames[-1]
    assert snap.timestamp.elapsed_seconds - first.timestamp.elapsed_seconds == pytest.approx(0.3)
    assert snap.timestamp.delta_seconds == pytest.approx(0.1)


def test_blueprints_and_actor_lists(client):
    world = client.get_world()
    library = world.get_blueprint_library()
    for bp_id in ("vehicle.lincoln.mkz_2020", "vehicle.tesla.model3", "vehicle.audi.a2", "vehicle.nissan.micra",
                  "vehicle.bh.crossbike", "walker.pedestrian.0001", "static.prop.trafficcone01", "sensor.camera.rgb",
                  "sensor.other.collision", "sensor.other.lane_invasion"):
        assert library.find(bp_id).get_attribute("role_name").as_str() == "autopilot"
    assert library.find("vehicle.bh.crossbike").get_attribute("number_of_wheels").as_int() == 2
    camera = library.find("sensor.camera.rgb")
    assert camera.get_attribute("image_size_x").as_int() == 800 and camera.get_attribute("fov").as_float() == 90.0
    assert {bp.id for bp in library.filter("vehicle.*")} >= {"vehicle.lincoln.mkz_2020", "vehicle.bh.crossbike"}
    with pytest.raises(IndexError):
        library.find("vehicle.nope")
    with pytest.raises(RuntimeError):
        library.find("vehicle.nope")
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", _straight_start(world), role="hero")
    extent = hero.bounding_box.extent
    assert (extent.x, extent.y, extent.z) == pytest.approx((2.45, 1.06, 0.76))
    assert hero.attributes["role_name"] == "hero" and hero.attributes["number_of_wheels"] == "4"
    actors = world.get_actors()
    assert actors.find(hero.id) == hero and len(actors.filter("vehicle.*")) == 1
    assert [a.id for a in world.get_actors([hero.id])] == [hero.id]
    assert world.get_actor(hero.id).type_id == "vehicle.lincoln.mkz_2020"
    assert hero.destroy() is True and hero.destroy() is False and not hero.is_alive


# ----------------------------------------------------------------------------------------------------------------------
# Motion

def test_throttle_moves_forward_along_yaw_at_about_4_mps(client):
    world = client.get_world()
    _sync(world, 0.05)
    start = _straight_start(world)
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", start, role="hero")
    hero.apply_control(carla.VehicleControl(throttle=1.0))
    for _ in range(20):
        world.tick()
    end = hero.get_transform()
    dx, dy = end.location.x - start.location.x, end.location.y - start.location.y
    fx, fy = geometry._forward(start.rotation.yaw)
    travelled = math.hypot(dx, dy)
    assert 1.5 < travelled < 2.5
    assert (dx * fx + dy * fy) / travelled > 0.999
    speed = hero.get_velocity().length()
    assert 3.5 < speed < 4.1
    assert world.get_snapshot().find(hero.id).get_velocity().length() == pytest.approx(speed)
    assert end.rotation.yaw == pytest.approx(start.rotation.yaw, abs=1e-6)
    hero.apply_control(carla.VehicleControl(brake=1.0))
    for _ in range(20):
        world.tick()
    assert hero.get_velocity().length() == 0.0            # never below 0 without reverse
    hero.apply_control(carla.VehicleControl(throttle=1.0, reverse=True))
    before = hero.get_location()
    for _ in range(10):
        world.tick()
    after = hero.get_location()
    assert (after.x - before.x) * fx + (after.y - before.y) * fy < -0.2


@pytest.mark.parametrize("steer", [0.3, -0.3])
def test_steer_positive_turns_right(client, steer):
    world = client.get_world()
    _sync(world, 0.05)
    start = _straight_start(world)
    hero = _spawn(world, "vehicle.tesla.model3", start, role="hero")
    hero.apply_control(carla.VehicleControl(throttle=0.6, steer=steer))
    for _ in range(20):
        world.tick()
    end = hero.get_transform()
    turn = geometry._wrap_deg(end.rotation.yaw - start.rotation.yaw)
    fx, fy = geometry._forward(start.rotation.yaw)
    lateral = -(end.location.x - start.location.x) * fy + (end.location.y - start.location.y) * fx
    assert math.copysign(1.0, turn) == math.copysign(1.0, steer) and abs(turn) > 5.0
    assert math.copysign(1.0, lateral) == math.copysign(1.0, steer)          # right is +y of the heading
    assert math.copysign(1.0, hero.get_angular_velocity().z) == math.copysign(1.0, steer)


def test_autopilot_follows_its_lane_and_stops_behind_a_vehicle(client):
    world = client.get_world()
    _sync(world, 0.1)
    carla_map = world.get_map()
    start = _straight_start(world)
    car = _spawn(world, "vehicle.audi.a2", start)
    car.set_autopilot(True, 8000)
    for _ in range(30):
        world.tick()
        loc = car.get_location()
        centre = carla_map.get_waypoint(loc).transform.location
        assert math.hypot(loc.x - centre.x, loc.y - centre.y) < 0.5
    assert car.get_location().distance(start.location) > 5.0
    assert car.get_velocity().length() == pytest.approx(min(0.7 * 30 / 3.6, 8.0), rel=0.1)
    ahead = _offset(car.get_transform(), forward=18.0)
    _spawn(world, "vehicle.nissan.micra", ahead)                             # parked, in the same lane
    for _ in range(60):
        world.tick()
    gap = car.get_location().distance(ahead.location) - 2.3 - 2.3
    assert car.get_velocity().length() < 0.05 and 0.5 < gap < 8.0


# ----------------------------------------------------------------------------------------------------------------------
# Sensors

def test_collision_event_once_per_contact(client):
    world = client.get_world()
    _sync(world)
    start = _straight_start(world)
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", start, role="hero")
    parked = _spawn(world, "vehicle.nissan.micra", _offset(start, forward=20.0))
    sensor = _spawn(world, "sensor.other.collision", carla.Transform(), attach_to=hero)
    events: list[FakeCollisionEvent] = []
    sensor.listen(events.append)
    assert sensor.is_listening()
    world.tick()
    assert events == []
    hero.set_transform(_offset(start, forward=16.0))                          # bumpers overlap by ~0.75 m
    frame = world.tick()
    world.tick()
    assert len(events) == 1
    event = events[0]
    assert event.frame == frame and event.actor == hero and event.other_actor == parked
    assert isinstance(event.normal_impulse, carla.Vector3D) and event.normal_impulse.length() > 0
    hero.set_transform(start)
    world.tick()
    hero.set_transform(_offset(start, forward=16.0))
    world.tick()
    assert len(events) == 2
    sensor.stop()
    assert not sensor.is_listening()


def test_spawn_collision_on_overlap(client, server):
    world = client.get_world()
    start = _straight_start(world)
    _spawn(world, "vehicle.lincoln.mkz_2020", start)
    bp = world.get_blueprint_library().find("vehicle.tesla.model3")
    assert world.try_spawn_actor(bp, _offset(start, forward=1.0)) is None
    with pytest.raises(RuntimeError, match=SPAWN_COLLISION):
        world.spawn_actor(bp, _offset(start, right=0.5))
    assert world.try_spawn_actor(bp, _offset(start, forward=6.0)) is not None
    assert server.stats.spawned == 2 and server.stats.spawn_failures == 2


def test_camera_delivers_each_frame(client):
    world = client.get_world()
    _sync(world)
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", _straight_start(world), role="hero")
    bp = world.get_blueprint_library().find("sensor.camera.rgb")
    bp.set_attribute("image_size_x", "64")
    bp.set_attribute("image_size_y", "48")
    camera = world.spawn_actor(bp, carla.Transform(carla.Location(x=1.5, z=2.0)), attach_to=hero)
    images: list[FakeImage] = []
    camera.listen(images.append)
    frames = [world.tick() for _ in range(3)]
    assert [image.frame for image in images] == frames
    assert all(len(image.raw_data) == 48 * 64 * 4 and (image.width, image.height) == (64, 48) for image in images)
    assert images[-1].timestamp == pytest.approx(world.get_snapshot().timestamp.elapsed_seconds)
    before = images[-1].raw_data
    hero.set_transform(_offset(hero.get_transform(), yaw=90.0))
    world.tick()
    assert images[-1].raw_data != before                                  # the picture follows the parent's pose
    assert images[-1].transform.rotation.yaw == pytest.approx(hero.get_transform().rotation.yaw)


def test_lane_invasion_when_changing_lane(client):
    world = client.get_world()
    _sync(world)
    carla_map = world.get_map()
    start = _straight_start(world)
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", start, role="hero")
    sensor = _spawn(world, "sensor.other.lane_invasion", carla.Transform(), attach_to=hero)
    events = []
    sensor.listen(events.append)
    world.tick()
    here = carla_map.get_waypoint(start.location)
    other = next(lane for lane in (here.get_left_lane(), here.get_right_lane())
                 if lane is not None and lane.lane_type == carla.LaneType.Driving)
    hero.set_transform(carla.Transform(other.transform.location, start.rotation))
    world.tick()
    assert len(events) == 1 and events[0].actor == hero
    assert events[0].crossed_lane_markings and all(isinstance(m, carla.LaneMarking) for m in events[0].crossed_lane_markings)


def test_sensor_outlives_its_parent(client, server):
    world = client.get_world()
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", _straight_start(world), role="hero")
    camera = _spawn(world, "sensor.camera.rgb", carla.Transform(carla.Location(z=2.0)), attach_to=hero)
    assert hero.destroy()
    assert camera.is_alive and [a.id for a in server.client_actors()] == [camera.id]
    assert camera.destroy() and server.client_actors() == []


# ----------------------------------------------------------------------------------------------------------------------
# Failure injection

def test_inject_timeout_once(client, server):
    world = client.get_world()
    _sync(world)
    server.inject("timeout", at_tick=3)
    assert [world.tick(), world.tick()] == [1, 2]
    start = time.monotonic()
    with pytest.raises(RuntimeError) as error:
        world.tick()
    assert time.monotonic() - start >= SHORT * 0.9
    assert str(error.value) == timeout_message(SHORT, "localhost", server.port)
    assert world.tick() == 3 and not server.dead                         # once; the server stays alive


def test_inject_hang_blocks_until_release(client, server):
    world = client.get_world()
    _sync(world)
    server.inject("hang", at_tick=2)
    world.tick()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("frame", world.tick()), daemon=True)
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and server.hung
    assert world.get_settings().synchronous_mode                         # other RPCs still answer
    server.release()
    worker.join(2.0)
    assert not worker.is_alive() and result["frame"] == 2


def test_hung_tick_is_released_by_stop(town_dir):
    with serving(town_dir, port=next(_PORTS)) as srv:
        client = srv.client(timeout=SHORT)
        world = client.get_world()
        srv.inject("hang")
        errors = []

        def tick():
            try:
                world.tick()
            except RuntimeError as error:
                errors.append(str(error))
        worker = threading.Thread(target=tick, daemon=True)
        worker.start()
        worker.join(0.2)
        assert worker.is_alive()
    worker.join(2.0)
    assert not worker.is_alive() and errors and errors[0].startswith("time-out of 100ms")


def test_inject_drop_sensor_frame(client, server):
    world = client.get_world()
    _sync(world)
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", _straight_start(world), role="hero")
    images = []
    camera = _spawn(world, "sensor.camera.rgb", carla.Transform(), attach_to=hero)
    camera.listen(images.append)
    server.inject("drop_sensor_frame", at_tick=2)
    frames = [world.tick() for _ in range(3)]
    assert frames == [1, 2, 3] and [image.frame for image in images] == [1, 3]


def test_inject_spawn_collision_for_heroes_only(client, server):
    world = client.get_world()
    start = _straight_start(world)
    server.inject("spawn_collision", count=2)
    bp = world.get_blueprint_library().find("vehicle.lincoln.mkz_2020")
    assert world.try_spawn_actor(bp, start) is not None                   # role_name autopilot: unaffected
    bp.set_attribute("role_name", "hero")
    far = _offset(start, forward=20.0)
    assert world.try_spawn_actor(bp, far) is None
    with pytest.raises(RuntimeError, match=SPAWN_COLLISION):
        world.spawn_actor(bp, far)
    assert world.spawn_actor(bp, far).attributes["role_name"] == "hero"


def test_inject_die_then_revive(client, server):
    world = client.get_world()
    _sync(world)
    tm = client.get_trafficmanager(8000)
    tm.set_synchronous_mode(True)
    start = _straight_start(world)
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", start, role="hero")
    bp = world.get_blueprint_library().find("vehicle.tesla.model3")
    server.inject("die", at_tick=2)
    world.tick()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=f"^time-out of 100ms .* connected to localhost:{server.port}$"):
        world.tick()
    assert time.monotonic() - t0 >= SHORT * 0.9
    assert server.dead and server.client_actors() == []
    other = FakeClient("localhost", server.port)
    other.set_timeout(0.05)
    for call in (client.get_world, other.get_server_version, lambda: other.get_trafficmanager(8000), world.get_settings):
        with pytest.raises(RuntimeError, match="time-out of"):
            call()
    assert hero.is_alive                                                 # the client was not told
    with pytest.raises(RuntimeError, match="time-out of"):
        hero.destroy()
    client.apply_batch([carla.command.DestroyActor(hero.id)])            # fire-and-forget: silently lost
    assert world.try_spawn_actor(bp, _offset(start, forward=20.0)) is None     # after the time-out, like CARLA
    with pytest.raises(AssertionError, match="dead"):
        server.assert_clean()
    server.revive()
    assert not server.dead and server.town == "Town01" and not server.synchronous and not server.tm_synchronous
    assert server.client_actors() == [] and not hero.is_alive
    with pytest.raises(RuntimeError) as error:
        world.tick()
    assert str(error.value) == EXPIRED_EPISODE
    assert not client.get_world().get_settings().synchronous_mode
    server.assert_clean()


def test_restart_marker_revives_a_dead_server(client, server, tmp_path):
    marker = tmp_path / "restart"
    server.restart_marker(marker)
    server.inject("die")
    with pytest.raises(RuntimeError, match="time-out"):
        client.get_world()
    marker.touch()
    world = client.get_world()
    assert not server.dead and not marker.exists() and world.get_map().name.endswith("Town01")
    assert server.stats.deaths == 1 and server.stats.revives == 1


# ----------------------------------------------------------------------------------------------------------------------
# Cleanup accounting

def test_assert_clean_names_leftovers_and_sync(client, server):
    world = client.get_world()
    server.assert_clean()
    _sync(world)
    tm = client.get_trafficmanager(8001)
    tm.set_synchronous_mode(True)
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", _straight_start(world), role="hero")
    camera = _spawn(world, "sensor.camera.rgb", carla.Transform(), attach_to=hero)
    with pytest.raises(AssertionError) as error:
        server.assert_clean()
    message = str(error.value)
    assert f"id={hero.id} type_id=vehicle.lincoln.mkz_2020 role_name='hero'" in message
    assert f"id={camera.id} type_id=sensor.camera.rgb" in message
    assert "synchronous" in message and "port 8001" in message
    assert server.synchronous and server.tm_synchronous
    responses = client.apply_batch_sync([carla.command.DestroyActor(hero.id), carla.command.DestroyActor(camera.id),
                                         carla.command.DestroyActor(99999)])
    assert [r.has_error() for r in responses] == [False, False, True] and responses[0].actor_id == hero.id
    with pytest.raises(AssertionError, match="synchronous") as error:
        server.assert_clean()
    assert "still alive" not in str(error.value)
    _async(world)
    tm.set_synchronous_mode(False)
    server.assert_clean()
    assert server.stats.spawned == 2 and server.stats.destroyed == 2
    assert all(a.type_id in ("traffic.traffic_light", "spectator") for a in world.get_actors())


def test_batch_autopilot_and_control(client):
    world = client.get_world()
    _sync(world)
    start = _straight_start(world)
    car = _spawn(world, "vehicle.audi.a2", start)
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", _offset(start, forward=-30.0), role="hero")
    responses = client.apply_batch_sync([carla.command.SetAutopilot(car.id, True, 8000),
                                         carla.command.ApplyVehicleControl(hero.id, carla.VehicleControl(throttle=1.0))],
                                        do_tick=True)
    assert not any(r.has_error() for r in responses)
    assert hero.get_control().throttle == 1.0 and world.get_snapshot().frame == 1
    for _ in range(10):
        world.tick()
    assert car.get_location().distance(start.location) > 0.5 and hero.get_velocity().length() > 1.0


# ----------------------------------------------------------------------------------------------------------------------
# Traffic lights

def _states(world):
    return {light.get_opendrive_id(): light.get_state() for light in world.get_actors().filter("traffic.traffic_light")}


def test_traffic_lights_cycle_and_reset(client, server):
    world = client.get_world()
    lights = world.get_actors().filter("traffic.traffic_light")
    landmarks = {str(lm.id) for lm in world.get_map().get_all_landmarks_of_type("1000001")}
    assert {light.get_opendrive_id() for light in lights} == landmarks and len(lights) == len(landmarks)
    assert server.client_actors() == []                                   # the map's, not the client's
    initial = _states(world)
    assert len(set(initial.values())) > 1                                 # per-light offsets
    _sync(world, 0.5)
    light = lights[0]
    sequence = []
    for _ in range(50):                                                   # one 25 s period
        world.tick()
        sequence.append(light.get_state())
    runs = [(state, len(list(group))) for state, group in itertools.groupby(sequence + sequence)]
    order = [state for state, _ in runs]
    green = order.index(carla.TrafficLightState.Green, 1)
    assert order[green:green + 3] == [carla.TrafficLightState.Green, carla.TrafficLightState.Yellow,
                                      carla.TrafficLightState.Red]
    assert [n for _, n in runs[green:green + 3]] == [20, 6, 24]          # 10 s, 3 s, 12 s at 0.5 s a tick
    for _ in range(7):
        world.tick()
    assert _states(world) != initial
    world.reset_all_traffic_lights()
    assert _states(world) == initial


# ----------------------------------------------------------------------------------------------------------------------
# Episodes, snapshots, waiting

def test_load_world_loses_every_actor(client, server):
    world = client.get_world()
    hero = _spawn(world, "vehicle.lincoln.mkz_2020", _straight_start(world), role="hero")
    cone = _spawn(world, "static.prop.trafficcone01", _offset(_straight_start(world), forward=10.0))
    snapshot = world.get_snapshot()
    assert snapshot.has_actor(hero.id) and snapshot.find(cone.id).get_transform().location.distance(cone.get_location()) < 1e-6
    assert {s.id for s in snapshot} >= {hero.id, cone.id} and len(snapshot) == len(world.get_actors())
    client.load_world("Town01")
    assert server.client_actors() == [] and not hero.is_alive and server.stats.lost == 2
    with pytest.raises(RuntimeError) as error:
        hero.destroy()
    assert str(error.value) == EXPIRED_EPISODE
    server.assert_clean()


def test_wait_for_tick(client):
    world = client.get_world()
    frame = world.get_snapshot().frame
    assert world.wait_for_tick().frame == frame + 1                      # asynchronous: the server runs freely
    _sync(world)
    ticker = threading.Timer(0.05, world.tick)
    ticker.start()
    assert world.wait_for_tick(2.0).frame == frame + 2
    ticker.join()
    with pytest.raises(RuntimeError, match="time-out of 100ms"):
        world.wait_for_tick(0.1)
