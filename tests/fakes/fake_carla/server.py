"""The fake CARLA server itself: lifecycle, failure injection, episodes, spawning, ticking, motion and sensors."""
from __future__ import annotations

import contextlib
import math
import threading
import time
import traceback
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import carla

from tests.fakes.fake_carla.blueprints import _SHAPES, _SPECTATOR_SHAPE, _TRAFFIC_LIGHT_SHAPE, FakeBlueprint, _catalog
from tests.fakes.fake_carla.client import FakeClient
from tests.fakes.fake_carla.constants import _STATE
from tests.fakes.fake_carla.data import (
    FakeActorSnapshot,
    FakeCollisionEvent,
    FakeImage,
    FakeLaneInvasionEvent,
    FakeTimestamp,
    FakeWorldSnapshot,
    _render,
)
from tests.fakes.fake_carla.geometry import _box_corners, _boxes_overlap_2d, _forward, _pose_of, _transform, _wrap_deg
from tests.fakes.fake_carla.registry import _REGISTRY, _REGISTRY_LOCK, _registry_key
from tests.fakes.fake_carla.state import (
    FakeServerStats,
    _ActorState,
    _default_settings,
    _Episode,
    _Injection,
    _settings_object,
    _speed_limit_kmh,
    _Timeout,
    _TMState,
)
from tests.fakes.fake_carla.towns import _traffic_light_landmarks, load_map
from tests.fakes.fake_carla.world import FakeActor, FakeTrafficLight, _handle

if TYPE_CHECKING:
    from tests.fakes.fake_carla.blueprints import _Shape


CARLA_VERSION = "0.9.16"
EXPIRED_EPISODE = ("trying to access an expired episode; a new episode was started in the simulation but an object "
                   "tried accessing the old one.")
SPAWN_COLLISION = "Spawn failed because of collision at spawn position"
FAILURE_KINDS = ("timeout", "hang", "drop_sensor_frame", "spawn_collision", "die")
DEFAULT_DT = 0.05

# Motion constants (see the module docstring of the task: simple, deterministic).
THROTTLE_ACCEL = 4.0
BRAKE_DECEL = 9.0
DRAG = 0.05
MAX_WHEEL_ANGLE = math.radians(70.0)
AUTOPILOT_MAX_SPEED = 8.0
AUTOPILOT_LIMIT_FRACTION = 0.7
AUTOPILOT_RELAX_S = 1.0
AUTOPILOT_STOP_DECEL = 4.0
AUTOPILOT_STOP_GAP = 8.0
AUTOPILOT_LATERAL_BAND = 1.5


class FakeCarlaServer:
    """One fake CARLA server. ``start()`` makes it reachable by FakeClient(host, port); ``stop()`` takes it away.

    Test-side API: ``inject``, ``release``, ``revive``, ``restart_marker``, ``assert_clean``, ``client_actors``,
    ``actors``, ``traffic_lights``, ``client``, and the read-only properties ``synchronous``, ``tm_synchronous``,
    ``dead``, ``hung``, ``started``, ``ticks``, ``town``, ``settings``, ``episode_id``; ``stats`` counts events.
    """

    def __init__(self, town_dir: str | Path, host: str = "localhost", port: int = 2000, version: str = CARLA_VERSION,
                 start_town: str = "Town01", hang_limit_s: float = 60.0) -> None:
        self.town_dir = Path(town_dir)
        self.host = host
        self.port = int(port)
        self.version = version
        self.start_town = start_town
        self.hang_limit_s = float(hang_limit_s)
        self.stats = FakeServerStats()
        self.callback_errors: list[BaseException] = []
        self._lock = threading.RLock()
        self._tick_done = threading.Condition(self._lock)
        self._ticks = 0
        self._next_actor_id = 1
        self._next_episode_id = 1
        self._episode: _Episode | None = None
        self._tms: dict[int, _TMState] = {}
        self._injections: list[_Injection] = []
        self._marker: Path | None = None
        self._started = False
        self._dead = False
        self._hang_event: threading.Event | None = None
        self._blueprints = _catalog()

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> FakeCarlaServer:
        key = _registry_key(self.host, self.port)
        with _REGISTRY_LOCK:
            other = _REGISTRY.get(key)
            if other is not None and other is not self:
                raise RuntimeError(f"a fake CARLA server already listens on {self.host}:{self.port}")
            with self._lock:
                if not self._started or self._dead:
                    self._boot()
                self._started = True
            _REGISTRY[key] = self
        return self

    def stop(self) -> None:
        with _REGISTRY_LOCK:
            key = _registry_key(self.host, self.port)
            if _REGISTRY.get(key) is self:
                del _REGISTRY[key]
        with self._lock:
            self._started = False
            self._unhang()
            self._tick_done.notify_all()

    def __enter__(self) -> FakeCarlaServer:
        return self if self._started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _boot(self) -> None:
        """A fresh server: start town, asynchronous defaults, no client actors, no traffic manager."""
        self._dead = False
        self._unhang()
        self._tms = {}
        try:
            self._episode = self._new_episode(self.start_town, _default_settings())
        except RuntimeError:
            raise ValueError(f"start town {self.start_town!r} is not among {self.available_towns()} of {self.town_dir}") from None

    def revive(self) -> None:
        """Bring a dead (or hung) server back as a freshly started one. Unfired injections are kept."""
        with self._lock:
            old = self._episode
            if old is not None and not self._dead:
                self._drop_actors(old, lost=True)
            self._boot()
            self.stats.revives += 1
            self._tick_done.notify_all()

    def restart_marker(self, path: str | Path | None) -> None:
        """While dead or hung, the next contact from a client finding ``path`` present revives the server and deletes
        the file (so a backend's restart command such as ``touch PATH`` restarts it). None clears it."""
        with self._lock:
            self._marker = None if path is None else Path(path)

    def release(self) -> None:
        """Un-hang the server: blocked ticks complete normally."""
        with self._lock:
            self._unhang()

    def _unhang(self) -> None:
        event, self._hang_event = self._hang_event, None
        if event is not None:
            event.set()

    # -- failure injection ------------------------------------------------------------------------------------------

    def inject(self, kind: str, at_tick: int | None = None, count: int = 1) -> None:
        """Schedule a failure; see the module docstring for the meaning of ``at_tick``. ``count`` is used by
        "spawn_collision" (how many hero spawns fail) and "timeout" (how many RPCs time out)."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; expected one of {FAILURE_KINDS}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            tick = self._ticks + 1 if at_tick is None else int(at_tick)
            if kind == "die" and (at_tick is None or tick <= self._ticks):
                self._die()
                return
            self._injections.append(_Injection(kind, tick, count))

    def pending_injections(self) -> list[tuple[str, int, int]]:
        with self._lock:
            return [(i.kind, i.at_tick, i.count) for i in self._injections]

    def _armed(self, kind: str) -> _Injection | None:
        for injection in self._injections:
            if injection.kind == kind and self._ticks >= injection.at_tick - 1:
                return injection
        return None

    def _consume(self, injection: _Injection) -> None:
        injection.count -= 1
        if injection.count <= 0:
            self._injections.remove(injection)

    def _die(self) -> None:
        if self._dead:
            return
        self._dead = True
        self.stats.deaths += 1
        if self._episode is not None:
            self._drop_actors(self._episode, lost=True)
        self._unhang()
        self._tick_done.notify_all()

    def _check_marker(self) -> None:
        if self._marker is not None and (self._dead or self._hang_event is not None) and self._marker.exists():
            with contextlib.suppress(OSError):
                self._marker.unlink()
            self.revive()

    def _rpc_gate(self, consume_timeout: bool = True) -> None:
        """Called (under the lock) at the start of every contact from a client: raises _Timeout when it must fail."""
        self._check_marker()
        if self._dead or not self._started:
            raise _Timeout()
        if consume_timeout:
            injection = self._armed("timeout")
            if injection is not None:
                self._consume(injection)
                raise _Timeout()

    # -- accounting -------------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    @property
    def dead(self) -> bool:
        return self._dead

    @property
    def hung(self) -> bool:
        return self._hang_event is not None

    @property
    def ticks(self) -> int:
        return self._ticks

    @property
    def town(self) -> str | None:
        return None if self._episode is None else self._episode.town

    @property
    def episode_id(self) -> int | None:
        return None if self._episode is None else self._episode.id

    @property
    def settings(self) -> carla.WorldSettings:
        with self._lock:
            return _settings_object(self._episode.settings if self._episode else _default_settings())

    @property
    def synchronous(self) -> bool:
        with self._lock:
            return bool(not self._dead and self._episode is not None and self._episode.settings["synchronous_mode"])

    @property
    def tm_synchronous(self) -> bool:
        with self._lock:
            return bool(not self._dead and any(tm.synchronous for tm in self._tms.values()))

    def traffic_manager_ports(self) -> dict[int, bool]:
        """{port: synchronous} of the traffic managers created on this (incarnation of the) server."""
        with self._lock:
            return {port: tm.synchronous for port, tm in self._tms.items()}

    def client(self, timeout: float = 2.0) -> FakeClient:
        """A client of this server (for tests' own look-ups)."""
        client = FakeClient(self.host, self.port)
        client.set_timeout(timeout)
        return client

    def _alive_states(self, client_only: bool) -> list[_ActorState]:
        if self._dead or self._episode is None:
            return []
        return sorted((a for a in self._episode.actors.values() if a.alive and (a.client_spawned or not client_only)),
                      key=lambda a: a.id)

    def client_actors(self) -> list[FakeActor]:
        """Alive actors spawned through clients (not traffic lights nor the spectator)."""
        with self._lock:
            client = self.client()
            return [_handle(client, a) for a in self._alive_states(client_only=True)]

    def actors(self) -> list[FakeActor]:
        """Every alive actor of the current world (traffic lights and spectator included)."""
        with self._lock:
            client = self.client()
            return [_handle(client, a) for a in self._alive_states(client_only=False)]

    def traffic_lights(self) -> list[FakeTrafficLight]:
        return [a for a in self.actors() if isinstance(a, FakeTrafficLight)]

    def assert_clean(self) -> None:
        """AssertionError naming every alive client-spawned actor and any synchronous mode left on."""
        with self._lock:
            if self._dead:
                raise AssertionError(f"fake CARLA server {self.host}:{self.port} is dead: a dead server is never clean "
                                     "(revive() it, or have the backend restart it, first)")
            problems = [f"actor id={a.id} type_id={a.type_id} role_name={a.role_name!r} is still alive"
                        for a in self._alive_states(client_only=True)]
            if self._episode is not None and self._episode.settings["synchronous_mode"]:
                problems.append("world settings are still synchronous "
                                f"(fixed_delta_seconds={self._episode.settings['fixed_delta_seconds']})")
            problems += [f"traffic manager on port {port} is still synchronous"
                         for port, tm in sorted(self._tms.items()) if tm.synchronous]
        if problems:
            raise AssertionError(f"fake CARLA server {self.host}:{self.port} is not clean: " + "; ".join(problems))

    # -- episodes ---------------------------------------------------------------------------------------------------

    def available_towns(self) -> list[str]:
        return sorted(p.stem for p in self.town_dir.glob("*.xodr"))

    def _town_path(self, map_name: str) -> Path:
        name = str(map_name).rstrip("/").split("/")[-1]
        for town in self.available_towns():
            if town == name or town.lower() == name.lower():
                return self.town_dir / f"{town}.xodr"
        raise RuntimeError("map not found")

    def _new_episode(self, town: str, settings: dict[str, Any]) -> _Episode:
        path = self._town_path(town)
        episode = _Episode(self, self._next_episode_id, path.stem, load_map(path), dict(settings))
        self._next_episode_id += 1
        for opendrive_id, transform in _traffic_light_landmarks(path):
            light = self._register(episode, "traffic.traffic_light", "traffic_light", {"role_name": ""},
                                   _TRAFFIC_LIGHT_SHAPE, _pose_of(transform), None, client_spawned=False)
            light.opendrive_id = opendrive_id
            light.tl_initial_offset = light.tl_offset = float(zlib.crc32(opendrive_id.encode()) % 25)
        episode.spectator = self._register(episode, "spectator", "spectator", {"role_name": ""}, _SPECTATOR_SHAPE,
                                           (0.0, 0.0, 50.0, -90.0, 0.0, 0.0), None, client_spawned=False)
        episode.last_snapshot = self._snapshot(episode)
        self._episode = episode
        return episode

    def _load(self, map_name: str, reset_settings: bool) -> _Episode:
        path = self._town_path(map_name)          # raises "map not found" before anything is lost
        old = self._episode
        settings = _default_settings() if reset_settings or old is None else old.settings
        if old is not None:
            self._drop_actors(old, lost=True)
        self.stats.loads += 1
        episode = self._new_episode(path.stem, settings)
        self._tick_done.notify_all()
        return episode

    def _check_episode(self, episode: _Episode) -> None:
        if episode is not self._episode:
            raise RuntimeError(EXPIRED_EPISODE)

    # -- the one place actors are created and destroyed -------------------------------------------------------------

    def _register(self, episode: _Episode, type_id: str, kind: str, attributes: dict[str, str], shape: _Shape,
                  pose: tuple[float, ...], parent: _ActorState | None, client_spawned: bool) -> _ActorState:
        state = _ActorState(episode, self._next_actor_id, type_id, kind, attributes, shape, pose, parent, client_spawned)
        self._next_actor_id += 1
        episode.actors[state.id] = state
        if client_spawned:
            self.stats.spawned += 1
        return state

    def _spawn(self, episode: _Episode, blueprint: FakeBlueprint, transform: carla.Transform,
               parent: _ActorState | None) -> _ActorState:
        if not isinstance(blueprint, FakeBlueprint):
            raise TypeError(f"the fake CARLA server spawns FakeBlueprint objects from its own library, not {blueprint!r}")
        self._check_episode(episode)
        bp_id = blueprint.id
        kind = next((k for prefix, k in (("vehicle.", "vehicle"), ("walker.", "walker"), ("static.", "static"),
                                         ("sensor.", "sensor")) if bp_id.startswith(prefix)), None)
        if kind is None or bp_id not in _SHAPES:
            raise RuntimeError(f"blueprint '{bp_id}' cannot be spawned by the fake CARLA server")
        if parent is not None and (not parent.alive or parent.episode is not episode):
            raise RuntimeError("Spawn failed because the parent actor is not alive")
        attributes = {a.id: a.as_str() for a in blueprint}
        shape = _SHAPES[bp_id]
        pose = _pose_of(transform)
        if attributes.get("role_name") == "hero":
            injection = self._armed("spawn_collision")
            if injection is not None:
                self._consume(injection)
                self.stats.spawn_failures += 1
                raise RuntimeError(SPAWN_COLLISION)
        if kind != "sensor" and parent is None:
            x, y, z, _, yaw, _ = pose
            ex, ey, ez = shape.extent
            corners, low, high = _box_corners(x, y, yaw, ex, ey), z + shape.box_z - ez, z + shape.box_z + ez
            for other in episode.actors.values():
                if other.alive and other.kind in ("vehicle", "walker", "static"):
                    o_corners, o_low, o_high = other.box()
                    if low < o_high and o_low < high and _boxes_overlap_2d(corners, o_corners):
                        self.stats.spawn_failures += 1
                        raise RuntimeError(SPAWN_COLLISION)
        state = self._register(episode, bp_id, kind, attributes, shape, pose, parent, client_spawned=True)
        if kind == "vehicle":
            state.tm_port = 8000
        return state

    def _destroy(self, state: _ActorState, lost: bool = False) -> bool:
        if not state.alive:
            return False
        state.alive = False
        state.callback = None
        state.listen_client = None
        state.episode.actors.pop(state.id, None)
        if lost:
            state.lost = True
            self.stats.lost += 1 if state.client_spawned else 0
        else:
            self.stats.destroyed += 1
        return True

    def _drop_actors(self, episode: _Episode, lost: bool) -> None:
        for state in list(episode.actors.values()):
            self._destroy(state, lost=lost)

    # -- ticking ----------------------------------------------------------------------------------------------------

    def _tick(self, client: FakeClient, episode: _Episode) -> int:
        """A world.tick() of ``client``; returns the new frame. Sensor callbacks run after the lock is released."""
        while True:
            with self._lock:
                self._rpc_gate()
                self._check_episode(episode)
                injection = self._armed("die")
                if injection is not None and self._ticks + 1 >= injection.at_tick:
                    self._injections.remove(injection)
                    self._die()
                    raise _Timeout()
                injection = self._armed("hang")
                if injection is not None:
                    self._consume(injection)
                    if self._hang_event is None:
                        self._hang_event = threading.Event()
                event = self._hang_event
                if event is None:
                    frame, deliveries = self._advance(episode)
                    break
            if not event.wait(self.hang_limit_s):
                raise _Timeout(sleep=False)
            with self._lock:
                if self._dead or not self._started or episode is not self._episode:
                    raise _Timeout(sleep=False)
        self._deliver(deliveries)
        return frame

    def _advance(self, episode: _Episode) -> tuple[int, list[tuple[Callable, Any]]]:
        settings = episode.settings
        dt = float(settings["fixed_delta_seconds"] or DEFAULT_DT)
        self._ticks += 1
        self.stats.ticks += 1
        frame = self._ticks
        episode.elapsed += dt
        episode.delta = dt
        vehicles = [a for a in episode.actors.values() if a.alive and a.kind == "vehicle"]
        moves = [(v, self._autopilot_step(episode, v, dt, vehicles) if v.autopilot else self._control_step(v, dt))
                 for v in sorted(vehicles, key=lambda a: a.id)]
        for vehicle, (pose, velocity, angular, speed) in moves:
            old_velocity = vehicle.velocity
            vehicle.pose, vehicle.velocity, vehicle.angular_velocity, vehicle.speed = pose, velocity, angular, speed
            vehicle.acceleration = tuple((n - o) / dt for n, o in zip(velocity, old_velocity))
        for actor in episode.actors.values():
            if actor.kind in ("walker", "static") and actor.parent is None:
                actor.velocity = actor.angular_velocity = actor.acceleration = (0.0, 0.0, 0.0)
        drop = False
        for injection in [i for i in self._injections if i.kind == "drop_sensor_frame"]:
            if injection.at_tick == frame:
                drop = True
            if injection.at_tick <= frame:
                self._injections.remove(injection)
        if drop:
            self.stats.dropped_frames += 1
        deliveries: list[tuple[Callable, Any]] = []
        for sensor in sorted((a for a in episode.actors.values() if a.alive and a.kind == "sensor"), key=lambda a: a.id):
            for data in self._sense(episode, sensor, frame):
                if sensor.callback is not None and not drop:
                    deliveries.append((sensor.callback, data))
        snapshot = self._snapshot(episode)
        episode.last_snapshot = snapshot
        deliveries += [(callback, snapshot) for _, callback in list(episode.on_tick.values())]
        self._tick_done.notify_all()
        return frame, deliveries

    def _deliver(self, deliveries: list[tuple[Callable, Any]]) -> None:
        for callback, data in deliveries:
            try:
                callback(data)
            except Exception as error:  # CARLA logs callback errors in its streaming thread and carries on
                self.callback_errors.append(error)
                traceback.print_exc()

    # -- motion -----------------------------------------------------------------------------------------------------

    @staticmethod
    def _control_step(v: _ActorState, dt: float):
        control = v.control
        throttle = min(max(float(control.throttle), 0.0), 1.0)
        brake = 1.0 if control.hand_brake else min(max(float(control.brake), 0.0), 1.0)
        steer = min(max(float(control.steer), -1.0), 1.0)
        reverse = bool(control.reverse)
        v0 = v.speed
        if brake > 0.0:
            decel = (BRAKE_DECEL * brake + DRAG * abs(v0)) * dt
            v1 = max(0.0, v0 - decel) if v0 >= 0.0 else min(0.0, v0 + decel)
        else:
            drive = -THROTTLE_ACCEL * throttle if reverse else THROTTLE_ACCEL * throttle
            v1 = v0 + (drive - DRAG * v0) * dt
        if not reverse:
            v1 = max(v1, 0.0)
        x, y, z, pitch, yaw, roll = v.pose
        base = v.shape.wheel_base or 2.7
        psi0 = math.radians(yaw)
        fx0, fy0 = math.cos(psi0), math.sin(psi0)
        rear_x, rear_y = x - base / 2 * fx0, y - base / 2 * fy0
        distance = 0.5 * (v0 + v1) * dt
        dpsi = distance / base * math.tan(steer * MAX_WHEEL_ANGLE)
        psi1 = psi0 + dpsi
        if abs(dpsi) < 1e-9:
            rear_x, rear_y = rear_x + distance * fx0, rear_y + distance * fy0
        else:
            radius = distance / dpsi
            rear_x += radius * (math.sin(psi1) - math.sin(psi0))
            rear_y -= radius * (math.cos(psi1) - math.cos(psi0))
        fx1, fy1 = math.cos(psi1), math.sin(psi1)
        pose = (rear_x + base / 2 * fx1, rear_y + base / 2 * fy1, z, pitch, _wrap_deg(math.degrees(psi1)), roll)
        return pose, (v1 * fx1, v1 * fy1, 0.0), (0.0, 0.0, math.degrees(dpsi) / dt), v1

    def _autopilot_step(self, episode: _Episode, v: _ActorState, dt: float, vehicles: list[_ActorState]):
        x, y, z, pitch, yaw, roll = v.pose
        fx, fy = _forward(yaw)
        blocked = False
        for other in vehicles:
            if other is v:
                continue
            ox, oy = other.pose[0] - x, other.pose[1] - y
            ahead, lateral = ox * fx + oy * fy, -ox * fy + oy * fx
            gap = ahead - v.shape.extent[0] - other.shape.extent[0]
            if ahead > 0.0 and gap < AUTOPILOT_STOP_GAP and abs(lateral) <= AUTOPILOT_LATERAL_BAND:
                blocked = True
                break
        v0 = max(v.speed, 0.0)
        if blocked:
            v1 = max(0.0, v0 - AUTOPILOT_STOP_DECEL * dt)
        else:
            target = min(AUTOPILOT_LIMIT_FRACTION * _speed_limit_kmh(v) / 3.6, AUTOPILOT_MAX_SPEED)
            v1 = v0 + (target - v0) * min(1.0, dt / AUTOPILOT_RELAX_S)
        if v.waypoint is None:
            v.waypoint = episode.map.get_waypoint(carla.Location(x=x, y=y, z=z))
            v.lane_z_offset = z - float(v.waypoint.transform.location.z)
        distance = 0.5 * (v0 + v1) * dt
        if distance > 1e-6:
            successors = v.waypoint.next(distance)
            if successors:
                v.waypoint = successors[0]
            else:
                v1 = 0.0
        wx, wy, wz, _, wyaw, _ = _pose_of(v.waypoint.transform)
        pose = (wx, wy, wz + v.lane_z_offset, pitch, _wrap_deg(wyaw), roll)
        velocity = ((wx - x) / dt, (wy - y) / dt, 0.0)
        return pose, velocity, (0.0, 0.0, _wrap_deg(wyaw - yaw) / dt), v1

    # -- sensors ----------------------------------------------------------------------------------------------------

    def _sense(self, episode: _Episode, sensor: _ActorState, frame: int) -> list[Any]:
        client = sensor.listen_client
        parent = sensor.parent
        timestamp = episode.elapsed
        pose = sensor.world_pose()
        if sensor.type_id == "sensor.camera.rgb":
            if sensor.callback is None:
                return []
            tick = float(sensor.attributes.get("sensor_tick", "0") or 0)
            if tick > 0 and sensor.last_emit is not None and timestamp - sensor.last_emit < tick - 1e-9:
                return []
            sensor.last_emit = timestamp
            width = int(sensor.attributes.get("image_size_x", "800"))
            height = int(sensor.attributes.get("image_size_y", "600"))
            fov = float(sensor.attributes.get("fov", "90"))
            return [FakeImage(frame, timestamp, _transform(*pose), width, height, fov, _render(pose, width, height, fov))]
        if parent is None or not parent.alive:
            return []
        if sensor.type_id == "sensor.other.collision":
            corners, low, high = parent.box()
            touching = set()
            for other in episode.actors.values():
                if other is parent or not other.alive or other.kind not in ("vehicle", "walker", "static"):
                    continue
                if other.parent is parent:
                    continue
                o_corners, o_low, o_high = other.box()
                if low < o_high and o_low < high and _boxes_overlap_2d(corners, o_corners):
                    touching.add(other.id)
            begun = sorted(touching - sensor.contacts)
            sensor.contacts = touching
            if sensor.callback is None:
                return []
            events = []
            for other_id in begun:
                other = episode.actors[other_id]
                px, py = parent.pose[0], parent.pose[1]
                ox, oy = other.pose[0], other.pose[1]
                norm = math.hypot(px - ox, py - oy) or 1.0
                relative = math.dist(parent.velocity, other.velocity)
                magnitude = 1500.0 * max(relative, 1.0)
                impulse = carla.Vector3D(x=(px - ox) / norm * magnitude, y=(py - oy) / norm * magnitude, z=0.0)
                events.append(FakeCollisionEvent(frame, timestamp, _transform(*pose), _handle(client, parent),
                                                 _handle(client, other), impulse))
            return events
        if sensor.type_id == "sensor.other.lane_invasion":
            x, y, z = parent.world_pose()[:3]
            waypoint = episode.map.get_waypoint(carla.Location(x=x, y=y, z=z))
            previous, sensor.lane_waypoint = sensor.lane_waypoint, waypoint
            if previous is None or waypoint is None or previous.road_id != waypoint.road_id:
                return []
            if previous.lane_id == waypoint.lane_id or sensor.callback is None:
                return []
            left, right = previous.get_left_lane(), previous.get_right_lane()
            if left is not None and left.lane_id == waypoint.lane_id:
                crossed = [previous.left_lane_marking]
            elif right is not None and right.lane_id == waypoint.lane_id:
                crossed = [previous.right_lane_marking]
            else:
                crossed = [previous.left_lane_marking, previous.right_lane_marking]
            return [FakeLaneInvasionEvent(frame, timestamp, _transform(*pose), _handle(client, parent), crossed)]
        return []

    # -- snapshots and traffic lights -------------------------------------------------------------------------------

    def _snapshot(self, episode: _Episode) -> FakeWorldSnapshot:
        actors = {}
        for state in episode.actors.values():
            if state.alive:
                velocity, angular, acceleration = state.kinematics()
                actors[state.id] = FakeActorSnapshot(state.id, _transform(*state.world_pose()), carla.Vector3D(*velocity),
                                                     carla.Vector3D(*angular), carla.Vector3D(*acceleration))
        timestamp = FakeTimestamp(self._ticks, episode.elapsed, episode.delta, time.perf_counter())
        return FakeWorldSnapshot(episode.id, timestamp, actors)

    @staticmethod
    def _light_phase(light: _ActorState) -> tuple[Any, float]:
        """(state, seconds spent in it) of a traffic light now."""
        if light.tl_forced is not None:
            return light.tl_forced, 0.0
        if light.tl_frozen is not None:
            return light.tl_frozen
        green, yellow, red = light.tl_times
        period = green + yellow + red
        episode = light.episode
        phase = (episode.elapsed - episode.tl_reset_time + light.tl_offset) % period
        if phase < green - 1e-9:
            return _STATE.Green, phase
        if phase < green + yellow - 1e-9:
            return _STATE.Yellow, phase - green
        return _STATE.Red, phase - green - yellow

    @staticmethod
    def _set_light_phase(light: _ActorState, state: Any, into: float = 0.0) -> None:
        green, yellow, _red = light.tl_times
        starts = {_STATE.Green: 0.0, _STATE.Yellow: green, _STATE.Red: green + yellow}
        if state not in starts:
            light.tl_forced = state
            return
        light.tl_forced = None
        period = sum(light.tl_times)
        episode = light.episode
        light.tl_offset = (starts[state] + into - (episode.elapsed - episode.tl_reset_time)) % period
