"""A client's handles on the fake server: the world, actors (vehicles, walkers, sensors, lights), traffic manager."""
from __future__ import annotations

import fnmatch
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import carla

from tests.fakes.fake_carla.blueprints import FakeBlueprint, FakeBlueprintLibrary
from tests.fakes.fake_carla.constants import _STATE, timeout_message
from tests.fakes.fake_carla.geometry import _transform
from tests.fakes.fake_carla.state import (
    _copy_control,
    _default_settings,
    _set_autopilot,
    _set_velocity,
    _settings_object,
    _speed_limit_kmh,
    _teleport,
)

if TYPE_CHECKING:
    from tests.fakes.fake_carla.client import FakeClient
    from tests.fakes.fake_carla.data import FakeWorldSnapshot
    from tests.fakes.fake_carla.server import FakeCarlaServer
    from tests.fakes.fake_carla.state import _ActorState, _Episode, _TMState


def _handle(client: FakeClient | None, state: _ActorState) -> FakeActor:
    cls = {"vehicle": FakeVehicle, "walker": FakeWalker, "sensor": FakeSensor,
           "traffic_light": FakeTrafficLight}.get(state.kind, FakeActor)
    return cls(client if client is not None else state.episode.server.client(), state)


class FakeActorList:
    """Like carla.ActorList: iteration, ``len``, indexing, ``filter(wildcard)`` on type_id and ``find(id)``."""

    def __init__(self, actors: list[FakeActor]) -> None:
        self._actors = list(actors)

    def filter(self, wildcard: str) -> FakeActorList:
        return FakeActorList([a for a in self._actors if fnmatch.fnmatch(a.type_id, wildcard)])

    def find(self, actor_id: int) -> FakeActor | None:
        return next((a for a in self._actors if a.id == int(actor_id)), None)

    def __iter__(self) -> Iterator[FakeActor]:
        return iter(list(self._actors))

    def __len__(self) -> int:
        return len(self._actors)

    def __getitem__(self, index: int) -> FakeActor:
        return self._actors[index]


class FakeWorld:
    """A client's handle on one episode (one loaded town), like carla.World."""

    def __init__(self, client: FakeClient, episode: _Episode) -> None:
        self._client = client
        self._episode = episode

    @property
    def id(self) -> int:
        return self._episode.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeWorld) and other._episode is self._episode

    def __hash__(self) -> int:
        return hash(self._episode.id)

    def __repr__(self) -> str:
        return f"World(id={self._episode.id}, town={self._episode.town})"

    def _rpc(self):
        return self._client._rpc(self._episode)

    def _local(self) -> FakeCarlaServer:
        server = self._episode.server
        server._check_episode(self._episode)
        return server

    def get_map(self) -> carla.Map:
        with self._rpc():
            return self._episode.map

    def get_settings(self) -> carla.WorldSettings:
        with self._rpc():
            return _settings_object(self._episode.settings)

    def apply_settings(self, settings: carla.WorldSettings, seconds: float = 0.0) -> int:
        with self._rpc() as server:
            for key in _default_settings():
                if hasattr(settings, key):
                    self._episode.settings[key] = getattr(settings, key)
            return server._ticks

    def tick(self, seconds: float = 0.0) -> int:
        return self._client._call_tick(self._episode)

    def wait_for_tick(self, seconds: float = 0.0) -> FakeWorldSnapshot:
        """Asynchronous mode: the free-running server steps once. Synchronous mode: waits for another thread's tick
        (``seconds``, or the client's time-out when 0) and raises the time-out error when none comes."""
        seconds = seconds or self._client._timeout
        with self._rpc() as server:
            synchronous = self._episode.settings["synchronous_mode"]
            start = server._ticks
        if not synchronous:
            self.tick()
            return self._episode.last_snapshot
        deadline = time.monotonic() + seconds
        with server._tick_done:
            while server._ticks == start and not server._dead and self._episode is server._episode:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                server._tick_done.wait(remaining)
            if server._ticks != start and self._episode is server._episode:
                return self._episode.last_snapshot
        raise RuntimeError(timeout_message(seconds, self._client._host, self._client._port))

    def on_tick(self, callback: Callable[[FakeWorldSnapshot], None]) -> int:
        server = self._local()
        with server._lock:
            callback_id = len(self._episode.on_tick) + 1
            while callback_id in self._episode.on_tick:
                callback_id += 1
            self._episode.on_tick[callback_id] = (self._client, callback)
            return callback_id

    def remove_on_tick(self, callback_id: int) -> None:
        server = self._local()
        with server._lock:
            self._episode.on_tick.pop(callback_id, None)

    def get_snapshot(self) -> FakeWorldSnapshot:
        server = self._local()
        with server._lock:
            if server._dead:
                return self._episode.last_snapshot
            return server._snapshot(self._episode)

    def get_blueprint_library(self) -> FakeBlueprintLibrary:
        with self._rpc() as server:
            return FakeBlueprintLibrary([bp.copy() for bp in server._blueprints])

    def spawn_actor(self, blueprint: FakeBlueprint, transform: carla.Transform, attach_to: FakeActor | None = None,
                    attachment_type: Any = None, bone: str = "") -> FakeActor:
        parent = None if attach_to is None else attach_to._s
        with self._rpc() as server:
            state = server._spawn(self._episode, blueprint, transform, parent)
        return _handle(self._client, state)

    def try_spawn_actor(self, blueprint: FakeBlueprint, transform: carla.Transform, attach_to: FakeActor | None = None,
                        attachment_type: Any = None, bone: str = "") -> FakeActor | None:
        try:
            return self.spawn_actor(blueprint, transform, attach_to)
        except RuntimeError:
            return None

    def get_actors(self, actor_ids: list[int] | None = None) -> FakeActorList:
        with self._rpc():
            states = sorted((a for a in self._episode.actors.values() if a.alive), key=lambda a: a.id)
            if actor_ids is not None:
                wanted = {int(i) for i in actor_ids}
                states = [a for a in states if a.id in wanted]
            return FakeActorList([_handle(self._client, a) for a in states])

    def get_actor(self, actor_id: int) -> FakeActor | None:
        with self._rpc():
            state = self._episode.actors.get(int(actor_id))
            return None if state is None or not state.alive else _handle(self._client, state)

    def get_spectator(self) -> FakeActor:
        with self._rpc():
            return _handle(self._client, self._episode.spectator)

    def get_weather(self) -> carla.WeatherParameters:
        with self._rpc():
            return self._episode.weather

    def set_weather(self, weather: carla.WeatherParameters) -> None:
        with self._rpc():
            self._episode.weather = weather

    def reset_all_traffic_lights(self) -> None:
        with self._rpc():
            self._episode.tl_reset_time = self._episode.elapsed
            for actor in self._episode.actors.values():
                if actor.kind == "traffic_light":
                    actor.tl_offset = actor.tl_initial_offset
                    actor.tl_frozen = actor.tl_forced = None

    def freeze_all_traffic_lights(self, frozen: bool) -> None:
        with self._rpc() as server:
            for actor in self._episode.actors.values():
                if actor.kind == "traffic_light":
                    _freeze_light(server, actor, frozen)


def _freeze_light(server: FakeCarlaServer, light: _ActorState, frozen: bool) -> None:
    if frozen and light.tl_frozen is None:
        light.tl_frozen = server._light_phase(light)
    elif not frozen and light.tl_frozen is not None:
        state, into = light.tl_frozen
        light.tl_frozen = None
        server._set_light_phase(light, state, into)


class FakeActor:
    """A client's handle on one actor, like carla.Actor (equal to any other handle of the same actor)."""

    def __init__(self, client: FakeClient, state: _ActorState) -> None:
        self._client = client
        self._s = state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeActor) and other._s is self._s

    def __hash__(self) -> int:
        return hash(self._s.id)

    def __repr__(self) -> str:
        return f"Actor(id={self._s.id}, type={self._s.type_id})"

    # properties, from the client's cached view
    @property
    def id(self) -> int:
        return self._s.id

    @property
    def type_id(self) -> str:
        return self._s.type_id

    @property
    def attributes(self) -> dict[str, str]:
        return dict(self._s.attributes)

    @property
    def parent(self) -> FakeActor | None:
        return None if self._s.parent is None else _handle(self._client, self._s.parent)

    @property
    def semantic_tags(self) -> list[int]:
        return list(self._s.shape.semantic_tags)

    @property
    def bounding_box(self) -> carla.BoundingBox:
        return self._s.bounding_box()

    @property
    def is_alive(self) -> bool:
        server = self._s.episode.server
        with server._lock:
            if self._s.episode is not server._episode:
                return False
            return self._s.alive or (self._s.lost and server._dead)

    @property
    def is_active(self) -> bool:
        return self.is_alive

    @property
    def is_dormant(self) -> bool:
        return False

    def _local(self) -> FakeCarlaServer:
        server = self._s.episode.server
        server._check_episode(self._s.episode)
        return server

    def get_world(self) -> FakeWorld:
        self._local()
        return FakeWorld(self._client, self._s.episode)

    def get_transform(self) -> carla.Transform:
        with self._local()._lock:
            return _transform(*self._s.world_pose())

    def get_location(self) -> carla.Location:
        return self.get_transform().location

    def get_velocity(self) -> carla.Vector3D:
        with self._local()._lock:
            return carla.Vector3D(*self._s.kinematics()[0])

    def get_angular_velocity(self) -> carla.Vector3D:
        with self._local()._lock:
            return carla.Vector3D(*self._s.kinematics()[1])

    def get_acceleration(self) -> carla.Vector3D:
        with self._local()._lock:
            return carla.Vector3D(*self._s.kinematics()[2])

    # fire-and-forget setters
    def _fire(self, action: Callable[[FakeCarlaServer], None]) -> None:
        self._local()
        server = self._client._async(self._s.episode)
        if server is None:
            return
        with server._lock:
            if self._s.alive and self._s.episode is server._episode:
                action(server)

    def set_transform(self, transform: carla.Transform) -> None:
        self._fire(lambda server: _teleport(self._s, transform))

    def set_location(self, location: carla.Location) -> None:
        x, y, z, pitch, yaw, roll = self._s.rel_pose if self._s.rel_pose is not None else self._s.pose
        self.set_transform(_transform(location.x, location.y, location.z, pitch, yaw, roll))

    def set_target_velocity(self, velocity: carla.Vector3D) -> None:
        self._fire(lambda server: _set_velocity(self._s, velocity))

    def set_target_angular_velocity(self, velocity: carla.Vector3D) -> None:
        self._fire(lambda server: setattr(self._s, "angular_velocity", (velocity.x, velocity.y, velocity.z)))

    def set_simulate_physics(self, enabled: bool = True) -> None:
        self._fire(lambda server: None)

    def set_enable_gravity(self, enabled: bool = True) -> None:
        self._fire(lambda server: None)

    # RPC
    def destroy(self) -> bool:
        """True when this call destroyed the actor; False (as CARLA, with a warning there) when already destroyed."""
        self._local()
        with self._client._rpc(self._s.episode) as server:
            return server._destroy(self._s)


class FakeVehicle(FakeActor):
    def apply_control(self, control: carla.VehicleControl) -> None:
        copy = _copy_control(control)
        self._fire(lambda server: setattr(self._s, "control", copy))

    def get_control(self) -> carla.VehicleControl:
        with self._local()._lock:
            return _copy_control(self._s.control)

    def set_autopilot(self, enabled: bool = True, tm_port: int = 8000) -> None:
        with self._local()._lock:
            if self._s.alive:
                _set_autopilot(self._s, bool(enabled), int(tm_port))

    def get_speed_limit(self) -> float:
        with self._local()._lock:
            return _speed_limit_kmh(self._s)

    def get_traffic_light_state(self) -> Any:
        return _STATE.Green

    def is_at_traffic_light(self) -> bool:
        return False

    def get_traffic_light(self) -> None:
        return None

    def get_light_state(self) -> Any:
        return self._s.light_state

    def set_light_state(self, light_state: Any) -> None:
        self._fire(lambda server: setattr(self._s, "light_state", light_state))

    def get_wheel_steer_angle(self, wheel_location: Any = None) -> float:
        return float(self._s.control.steer) * 70.0


class FakeWalker(FakeActor):
    def apply_control(self, control: Any) -> None:
        self._fire(lambda server: setattr(self._s, "control", control))

    def get_control(self) -> Any:
        return self._s.control


class FakeSensor(FakeActor):
    def listen(self, callback: Callable[[Any], None]) -> None:
        with self._local()._lock:
            if not self._s.alive:
                return
            self._s.callback = callback
            self._s.listen_client = self._client

    def stop(self) -> None:
        with self._local()._lock:
            self._s.callback = None

    def is_listening(self) -> bool:
        return self._s.callback is not None


class FakeTrafficLight(FakeActor):
    def get_opendrive_id(self) -> str:
        return self._s.opendrive_id

    def get_state(self) -> Any:
        from tests.fakes.fake_carla.server import FakeCarlaServer  # server.py imports this module
        with self._local()._lock:
            return FakeCarlaServer._light_phase(self._s)[0]

    @property
    def state(self) -> Any:
        return self.get_state()

    def get_elapsed_time(self) -> float:
        from tests.fakes.fake_carla.server import FakeCarlaServer  # server.py imports this module
        with self._local()._lock:
            return FakeCarlaServer._light_phase(self._s)[1]

    def set_state(self, state: Any) -> None:
        def apply(server: FakeCarlaServer) -> None:
            if self._s.tl_frozen is not None:
                self._s.tl_frozen = (state, 0.0)
            else:
                server._set_light_phase(self._s, state)
        self._fire(apply)

    def freeze(self, freeze: bool) -> None:
        self._fire(lambda server: _freeze_light(server, self._s, bool(freeze)))

    def is_frozen(self) -> bool:
        return self._s.tl_frozen is not None

    def get_green_time(self) -> float:
        return self._s.tl_times[0]

    def get_yellow_time(self) -> float:
        return self._s.tl_times[1]

    def get_red_time(self) -> float:
        return self._s.tl_times[2]

    def _set_time(self, index: int, seconds: float) -> None:
        def apply(server: FakeCarlaServer) -> None:
            state, into = server._light_phase(self._s)
            self._s.tl_times[index] = float(seconds)
            server._set_light_phase(self._s, state, into)
        self._fire(apply)

    def set_green_time(self, seconds: float) -> None:
        self._set_time(0, seconds)

    def set_yellow_time(self, seconds: float) -> None:
        self._set_time(1, seconds)

    def set_red_time(self, seconds: float) -> None:
        self._set_time(2, seconds)

    def get_pole_index(self) -> int:
        return 0

    @property
    def trigger_volume(self) -> carla.BoundingBox:
        return carla.BoundingBox(carla.Location(x=0.0, y=0.0, z=0.0), carla.Vector3D(2.0, 2.0, 1.0))


class FakeTrafficManager:
    """Like carla.TrafficManager: ``get_port``, ``set_synchronous_mode`` and the usual setters (recorded in
    ``calls``; they do not change the fake's autopilot)."""

    def __init__(self, client: FakeClient, state: _TMState) -> None:
        self._client = client
        self._state = state

    @property
    def calls(self) -> list[tuple[str, tuple]]:
        return list(self._state.calls)

    def get_port(self) -> int:
        return self._state.port

    def set_synchronous_mode(self, mode_switch: bool = True) -> None:
        self._state.synchronous = bool(mode_switch)
        self._state.calls.append(("set_synchronous_mode", (bool(mode_switch),)))

    def set_random_device_seed(self, seed: int) -> None:
        self._state.seed = int(seed)
        self._state.calls.append(("set_random_device_seed", (int(seed),)))


def _recorder(name: str) -> Callable[..., None]:
    def record(self: FakeTrafficManager, *args: Any) -> None:
        self._state.calls.append((name, args))
    record.__name__ = name
    return record


for _name in ("set_global_distance_to_leading_vehicle", "global_percentage_speed_difference", "set_hybrid_physics_mode",
              "set_hybrid_physics_radius", "set_respawn_dormant_vehicles", "set_boundaries_respawn_dormant_vehicles",
              "set_osm_mode", "auto_lane_change", "distance_to_leading_vehicle", "vehicle_percentage_speed_difference",
              "ignore_lights_percentage", "ignore_signs_percentage", "ignore_vehicles_percentage",
              "ignore_walkers_percentage", "set_desired_speed", "update_vehicle_lights", "keep_right_rule_percentage",
              "random_left_lanechange_percentage", "random_right_lanechange_percentage", "force_lane_change",
              "set_path", "set_route", "collision_detection", "shut_down", "set_global_lane_offset",
              "vehicle_lane_offset"):
    setattr(FakeTrafficManager, _name, _recorder(_name))
