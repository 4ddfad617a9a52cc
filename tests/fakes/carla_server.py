"""FAKE CARLA 0.9.16 server for tests: a pure-Python, in-process stand-in for a simulator, seen through the client API.

Nothing here talks to a network or to a real simulator. A backend written against the real ``carla`` client is driven
by swapping ``carla.Client`` for :class:`FakeClient` (``install(monkeypatch)``) or by handing it
``fake_client_factory``; every value type it sees (Location, Rotation, Transform, Vector3D, BoundingBox, VehicleControl,
WorldSettings, TrafficLightState, LaneMarking, the offline ``carla.Map``) is the REAL one from the installed ``carla``
package. All state is kept in CARLA's left-handed frame: x forward, y right, z up, yaw in degrees, clockwise seen from
above (a yaw of 90 points along +y).

Usage::

    from tests.fakes.carla_server import serving, install, shared_town_dir

    def test_backend(monkeypatch):
        install(monkeypatch)                       # carla.Client is now FakeClient
        with serving(shared_town_dir(), port=2000) as server:
            server.inject("die", at_tick=5)        # the 5th world.tick() of this server times out, server dead
            ...                                    # drive the backend
            server.assert_clean()                  # no leftover client actors, asynchronous mode restored

Conventions of the fake (where CARLA leaves a choice, or where it is simplified):

* Ticks are numbered 1, 2, 3 ... over the life of a ``FakeCarlaServer`` (across ``revive``); the k-th served
  ``world.tick()`` is tick k and produces frame k (frame ids are this counter; ``load_world`` does not tick). An
  injection ``at_tick=N`` is armed from the moment tick N is the next tick, i.e. once N-1 ticks have been served;
  ``at_tick=None`` means "from now" (the next tick is the one concerned).
* RPCs (they time out when the server is absent or dead, and consume a "timeout" injection): client
  ``get_server_version``, ``get_world``, ``load_world``, ``reload_world``, ``get_available_maps``,
  ``get_trafficmanager``, ``apply_batch_sync``; world ``get_map``, ``get_settings``, ``apply_settings``, ``tick``,
  ``wait_for_tick``, ``get_blueprint_library``, ``spawn_actor`` / ``try_spawn_actor``, ``get_actors``, ``get_actor``,
  ``get_spectator``, ``get_weather`` / ``set_weather``, ``reset_all_traffic_lights``; actor ``destroy``.
  As in CARLA some calls are fire-and-forget and never raise a time-out (they are silently dropped by a dead server):
  ``client.apply_batch``, actor ``set_transform`` / ``set_location`` / ``set_target_velocity``, vehicle
  ``apply_control``, traffic light ``set_state`` / ``freeze``. Reads served from the client's cached episode state
  never time out: actor getters, ``is_alive``, ``world.get_snapshot()``, ``sensor.listen`` / ``stop``, the traffic
  manager's setters.
* ``try_spawn_actor`` returns None on any failure, a time-out included (CARLA's TrySpawnActor catches every
  std::exception), after sleeping the time-out.
* After ``load_world`` / ``reload_world`` / ``revive``, handles of the old episode (worlds, actors) raise CARLA's
  "trying to access an expired episode ..." RuntimeError (their ``is_alive`` is False). While the server is dead,
  actor handles keep the client's last view: ``is_alive`` stays True and getters return the last pose, but
  ``destroy()`` times out.
* A dead server is never clean: ``assert_clean()`` fails while dead; ``revive()`` (or the restart marker) gives a
  fresh server that is clean until the backend spawns again. ``synchronous`` / ``tm_synchronous`` read False while dead.
* "hang" puts the server in a hung state: the tick at tick N blocks and so does every later ``world.tick`` until
  ``release()`` (the blocked ticks then complete), ``stop()``, ``revive()`` or death (they then raise the time-out);
  a blocked tick gives up with the time-out after ``hang_limit_s`` (default 60 s) so a test never wedges. Other RPCs
  keep working while hung. The restart marker also revives a hung server.
* ``carla.command.*`` objects only accept integer actor ids when built with fake actors (Boost rejects the fake
  handles): write ``carla.command.DestroyActor(actor.id)``, which works against real CARLA too. Batch ``SpawnActor``
  is not supported (Boost rejects fake blueprints); it answers with an error response.
* Sensor callbacks run in the thread that ticked, after the tick, outside the fake's lock; an exception raised by a
  callback is recorded in ``server.callback_errors`` (CARLA only logs it) and does not fail the tick.
* Autopilot vehicles follow ``Waypoint.next`` from their lane (lane choice at forks: the first successor), keep their
  height above the lane, ignore traffic lights, and stop for a vehicle ahead when the bumper gap is under 8 m.
  Vehicles under direct control keep the height they were spawned at (no gravity, no physics response to contact).
"""
from __future__ import annotations

import contextlib
import fnmatch
import math
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import carla

CARLA_VERSION = "0.9.16"
DEFAULT_TIMEOUT_S = 5.0
MAPS_PREFIX = "/Game/Carla/Maps/"
EXPIRED_EPISODE = ("trying to access an expired episode; a new episode was started in the simulation but an object "
                   "tried accessing the old one.")
SPAWN_COLLISION = "Spawn failed because of collision at spawn position"
FAILURE_KINDS = ("timeout", "hang", "drop_sensor_frame", "spawn_collision", "die")
TRAFFIC_LIGHT_TYPE = "1000001"
DEFAULT_SPEED_LIMIT_KMH = 30.0
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

_STATE = carla.TrafficLightState


def timeout_message(timeout_s: float, host: str, port: int) -> str:
    """CARLA's client time-out text, word for word."""
    return (f"time-out of {int(round(timeout_s * 1000))}ms while waiting for the simulator, make sure the simulator is "
            f"ready and connected to {host}:{port}")


class NotFoundError(IndexError, RuntimeError):
    """An unknown blueprint or attribute: CARLA raises IndexError; catching RuntimeError works too."""


# ----------------------------------------------------------------------------------------------------------------------
# Offline maps (parsed once per process)

_MAP_CACHE: dict[Path, carla.Map] = {}
_LIGHTS_CACHE: dict[Path, list[tuple[str, carla.Transform]]] = {}
_MAP_LOCK = threading.Lock()


def load_map(path: str | Path) -> carla.Map:
    """The real offline ``carla.Map`` of an .xodr file, named "Carla/Maps/<stem>", parsed at most once per process."""
    path = Path(path).resolve()
    with _MAP_LOCK:
        carla_map = _MAP_CACHE.get(path)
        if carla_map is None:
            carla_map = carla.Map(f"Carla/Maps/{path.stem}", path.read_text())
            _MAP_CACHE[path] = carla_map
        return carla_map


def _traffic_light_landmarks(path: Path) -> list[tuple[str, carla.Transform]]:
    """(opendrive id, transform) of each distinct traffic-light landmark of a map, in map order."""
    path = Path(path).resolve()
    carla_map = load_map(path)
    with _MAP_LOCK:
        lights = _LIGHTS_CACHE.get(path)
        if lights is None:
            seen: dict[str, carla.Transform] = {}
            for landmark in carla_map.get_all_landmarks_of_type(TRAFFIC_LIGHT_TYPE):
                seen.setdefault(str(landmark.id), landmark.transform)
            lights = list(seen.items())
            _LIGHTS_CACHE[path] = lights
        return lights


def shared_town_dir() -> Path:
    """The shared CARLA town folder (shared/fixtures/carla/maps), or skip the calling test saying where it looked."""
    import pytest

    from tests.conftest import shared_dir

    path = shared_dir() / "fixtures" / "carla" / "maps"
    if not (path / "Town01.xodr").is_file():
        pytest.skip(f"CARLA town files are absent from {path} (set W0SIM_SHARED to the folder holding fixtures/)")
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Small geometry helpers (CARLA frame)

def _transform(x: float, y: float, z: float, pitch: float, yaw: float, roll: float) -> carla.Transform:
    return carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))


def _pose_of(transform: carla.Transform) -> tuple[float, float, float, float, float, float]:
    loc, rot = transform.location, transform.rotation
    return (float(loc.x), float(loc.y), float(loc.z), float(rot.pitch), float(rot.yaw), float(rot.roll))


def _wrap_deg(angle: float) -> float:
    """An angle in degrees, in [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def _forward(yaw_deg: float) -> tuple[float, float]:
    rad = math.radians(yaw_deg)
    return math.cos(rad), math.sin(rad)


def _box_corners(cx: float, cy: float, yaw_deg: float, ex: float, ey: float) -> list[tuple[float, float]]:
    fx, fy = _forward(yaw_deg)
    rx, ry = -fy, fx
    return [(cx + sx * ex * fx + sy * ey * rx, cy + sx * ex * fy + sy * ey * ry)
            for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1))]


def _boxes_overlap_2d(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    """Separating-axis test of two convex quadrilaterals (touching counts as no overlap)."""
    for poly in (a, b):
        for i in range(4):
            (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % 4]
            nx, ny = y2 - y1, x1 - x2
            pa = [nx * x + ny * y for x, y in a]
            pb = [nx * x + ny * y for x, y in b]
            if max(pa) <= min(pb) or max(pb) <= min(pa):
                return False
    return True


# ----------------------------------------------------------------------------------------------------------------------
# Blueprints

class FakeActorAttribute:
    """Like carla.ActorAttribute: ``id``, ``type``, ``recommended_values``, ``is_modifiable`` and the ``as_*`` readers."""

    def __init__(self, attr_id: str, value: str, modifiable: bool = True, type_name: str = "str",
                 recommended: tuple[str, ...] = ()) -> None:
        self.id = attr_id
        self.type = type_name
        self.is_modifiable = modifiable
        self.recommended_values = list(recommended)
        self._value = str(value)

    def as_str(self) -> str:
        return self._value

    def as_int(self) -> int:
        return int(float(self._value))

    def as_float(self) -> float:
        return float(self._value)

    def as_bool(self) -> bool:
        return self._value.strip().lower() in ("true", "1", "yes", "on")

    def __str__(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"ActorAttribute(id={self.id}, type={self.type}, value={self._value})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FakeActorAttribute):
            return self._value == other._value
        if isinstance(other, bool):
            return self.as_bool() == other
        if isinstance(other, (int, float)):
            try:
                return self.as_float() == float(other)
            except ValueError:
                return False
        if isinstance(other, str):
            return self._value == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class _Shape:
    extent: tuple[float, float, float]
    box_z: float            # bounding-box centre height above the actor origin
    wheel_base: float = 0.0
    wheels: int = 0
    base_type: str = ""
    semantic_tags: tuple[int, ...] = ()


_CAR = (2.3, 1.0, 0.75)
_SHAPES: dict[str, _Shape] = {
    "vehicle.lincoln.mkz_2020": _Shape((2.45, 1.06, 0.76), 0.76, 2.875, 4, "car", (14,)),
    "vehicle.tesla.model3": _Shape(_CAR, 0.75, 2.7, 4, "car", (14,)),
    "vehicle.audi.a2": _Shape(_CAR, 0.75, 2.7, 4, "car", (14,)),
    "vehicle.nissan.micra": _Shape(_CAR, 0.75, 2.7, 4, "car", (14,)),
    "vehicle.bh.crossbike": _Shape((0.8, 0.3, 0.8), 0.8, 2.7, 2, "bicycle", (19,)),
    "walker.pedestrian.0001": _Shape((0.2, 0.2, 0.9), 0.0, semantic_tags=(12,)),
    "static.prop.trafficcone01": _Shape((0.3, 0.3, 0.4), 0.4, semantic_tags=(20,)),
    "sensor.camera.rgb": _Shape((0.0, 0.0, 0.0), 0.0),
    "sensor.other.collision": _Shape((0.0, 0.0, 0.0), 0.0),
    "sensor.other.lane_invasion": _Shape((0.0, 0.0, 0.0), 0.0),
}
_TRAFFIC_LIGHT_SHAPE = _Shape((0.3, 0.3, 2.5), 2.5, semantic_tags=(7,))
_SPECTATOR_SHAPE = _Shape((0.0, 0.0, 0.0), 0.0)
_ROLE_VALUES = ("autopilot", "scenario", "ego_vehicle", "hero")


def _catalog_attributes(bp_id: str) -> list[FakeActorAttribute]:
    shape = _SHAPES[bp_id]
    attrs = [FakeActorAttribute("role_name", "autopilot", True, "str", _ROLE_VALUES)]
    if bp_id.startswith("vehicle."):
        attrs += [FakeActorAttribute("number_of_wheels", str(shape.wheels), False, "int"),
                  FakeActorAttribute("base_type", shape.base_type, False),
                  FakeActorAttribute("generation", "2", False, "int"),
                  FakeActorAttribute("has_lights", "true" if shape.wheels == 4 else "false", False, "bool"),
                  FakeActorAttribute("sticky_control", "true", True, "bool"),
                  FakeActorAttribute("color", "255,255,255", True, "rgbcolor", ("255,255,255", "0,0,0", "200,20,20"))]
    elif bp_id.startswith("walker."):
        attrs += [FakeActorAttribute("is_invincible", "true", True, "bool"),
                  FakeActorAttribute("speed", "1.4", True, "float", ("1.4", "2.0")),
                  FakeActorAttribute("generation", "2", False, "int")]
    elif bp_id.startswith("static."):
        attrs += [FakeActorAttribute("size", "small", False)]
    elif bp_id == "sensor.camera.rgb":
        attrs += [FakeActorAttribute("image_size_x", "800", True, "int"),
                  FakeActorAttribute("image_size_y", "600", True, "int"),
                  FakeActorAttribute("fov", "90", True, "float"),
                  FakeActorAttribute("sensor_tick", "0.0", True, "float")]
    return attrs


class FakeBlueprint:
    """Like carla.ActorBlueprint: ``id``, ``tags``, attribute access; iterating yields its attributes."""

    def __init__(self, bp_id: str, tags: list[str], attributes: list[FakeActorAttribute]) -> None:
        self.id = bp_id
        self.tags = list(tags)
        self._attributes = {a.id: a for a in attributes}

    def copy(self) -> FakeBlueprint:
        return FakeBlueprint(self.id, self.tags, [FakeActorAttribute(a.id, a.as_str(), a.is_modifiable, a.type,
                                                                     tuple(a.recommended_values))
                                                  for a in self._attributes.values()])

    def has_tag(self, tag: str) -> bool:
        return tag in self.tags

    def match_tags(self, wildcard: str) -> bool:
        return fnmatch.fnmatch(self.id, wildcard) or any(fnmatch.fnmatch(t, wildcard) for t in self.tags)

    def has_attribute(self, attr_id: str) -> bool:
        return attr_id in self._attributes

    def get_attribute(self, attr_id: str) -> FakeActorAttribute:
        try:
            return self._attributes[attr_id]
        except KeyError:
            raise NotFoundError(f"blueprint '{self.id}' does not have attribute '{attr_id}'") from None

    def set_attribute(self, attr_id: str, value: str) -> None:
        attr = self.get_attribute(attr_id)
        if not attr.is_modifiable:
            raise RuntimeError(f"attribute '{attr_id}' of blueprint '{self.id}' is not modifiable")
        attr._value = str(value)

    def __iter__(self) -> Iterator[FakeActorAttribute]:
        return iter(list(self._attributes.values()))

    def __len__(self) -> int:
        return len(self._attributes)

    def __repr__(self) -> str:
        return f"ActorBlueprint(id={self.id}, tags={self.tags})"


def _catalog() -> list[FakeBlueprint]:
    out = []
    for bp_id in _SHAPES:
        parts = bp_id.split(".")
        tags = list(dict.fromkeys(parts[::-1] + ([_SHAPES[bp_id].base_type] if _SHAPES[bp_id].base_type else [])))
        out.append(FakeBlueprint(bp_id, tags, _catalog_attributes(bp_id)))
    return out


class FakeBlueprintLibrary:
    """Like carla.BlueprintLibrary: ``find``, ``filter``, iteration, ``len`` and indexing."""

    def __init__(self, blueprints: list[FakeBlueprint]) -> None:
        self._blueprints = list(blueprints)

    def find(self, bp_id: str) -> FakeBlueprint:
        for bp in self._blueprints:
            if bp.id == bp_id:
                return bp
        raise NotFoundError(f"blueprint '{bp_id}' not found")

    def filter(self, wildcard: str) -> FakeBlueprintLibrary:
        return FakeBlueprintLibrary([bp for bp in self._blueprints if bp.match_tags(wildcard)])

    def __iter__(self) -> Iterator[FakeBlueprint]:
        return iter(list(self._blueprints))

    def __len__(self) -> int:
        return len(self._blueprints)

    def __getitem__(self, index: int) -> FakeBlueprint:
        return self._blueprints[index]


# ----------------------------------------------------------------------------------------------------------------------
# Server-side state

@dataclass
class FakeServerStats:
    """Counters over the life of one FakeCarlaServer (``stats.ticks`` or ``stats["ticks"]``)."""
    ticks: int = 0
    spawned: int = 0
    destroyed: int = 0
    loads: int = 0
    lost: int = 0           # actors that vanished with a world load or the server's death
    spawn_failures: int = 0
    timeouts: int = 0       # time-out errors raised to clients
    deaths: int = 0
    revives: int = 0
    dropped_frames: int = 0

    def __getitem__(self, key: str) -> int:
        return getattr(self, key)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Injection:
    kind: str
    at_tick: int
    count: int = 1


@dataclass
class _TMState:
    port: int
    synchronous: bool = False
    seed: int | None = None
    calls: list[tuple[str, tuple]] = field(default_factory=list)


class _ActorState:
    """Everything the server knows about one actor; client handles (FakeActor) delegate to it."""

    def __init__(self, episode: _Episode, actor_id: int, type_id: str, kind: str, attributes: dict[str, str],
                 shape: _Shape, pose: tuple[float, ...], parent: _ActorState | None, client_spawned: bool) -> None:
        self.episode = episode
        self.id = actor_id
        self.type_id = type_id
        self.kind = kind                      # vehicle, walker, static, sensor, traffic_light, spectator
        self.attributes = attributes
        self.shape = shape
        self.parent = parent
        self.rel_pose = pose if parent is not None else None
        self.pose = pose if parent is None else (0.0,) * 6
        self.client_spawned = client_spawned
        self.alive = True
        self.lost = False                     # vanished with the server's death (the client has not been told)
        self.velocity = (0.0, 0.0, 0.0)
        self.angular_velocity = (0.0, 0.0, 0.0)
        self.acceleration = (0.0, 0.0, 0.0)
        self.speed = 0.0                      # signed, along the heading
        # vehicles
        self.control = carla.VehicleControl()
        self.autopilot = False
        self.tm_port = 8000
        self.waypoint: Any = None             # autopilot: the lane waypoint it is on
        self.lane_z_offset = 0.0
        self.light_state = carla.VehicleLightState.NONE
        # sensors
        self.callback: Callable[[Any], None] | None = None
        self.listen_client: FakeClient | None = None
        self.contacts: set[int] = set()
        self.lane_waypoint: Any = None
        self.last_emit: float | None = None
        # traffic lights
        self.opendrive_id = ""
        self.tl_offset = 0.0
        self.tl_initial_offset = 0.0
        self.tl_times = [10.0, 3.0, 12.0]     # green, yellow, red
        self.tl_frozen: Any = None            # (state, phase) while frozen
        self.tl_forced: Any = None            # Off / Unknown set by set_state
        if parent is not None:
            self.pose = self.world_pose()

    @property
    def role_name(self) -> str:
        return self.attributes.get("role_name", "")

    def world_pose(self) -> tuple[float, float, float, float, float, float]:
        parent = self.parent
        if parent is not None and parent.alive and self.rel_pose is not None:
            px, py, pz, ppitch, pyaw, proll = parent.world_pose()
            rx, ry, rz, rpitch, ryaw, rroll = self.rel_pose
            fx, fy = _forward(pyaw)
            self.pose = (px + fx * rx - fy * ry, py + fy * rx + fx * ry, pz + rz,
                         ppitch + rpitch, _wrap_deg(pyaw + ryaw), proll + rroll)
        return self.pose

    def kinematics(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        if self.parent is not None and self.parent.alive:
            return self.parent.kinematics()
        return self.velocity, self.angular_velocity, self.acceleration

    def box(self) -> tuple[list[tuple[float, float]], float, float]:
        """Ground-plane corners and the vertical interval of the bounding box."""
        x, y, z, _, yaw, _ = self.world_pose()
        ex, ey, ez = self.shape.extent
        return _box_corners(x, y, yaw, ex, ey), z + self.shape.box_z - ez, z + self.shape.box_z + ez

    def bounding_box(self) -> carla.BoundingBox:
        return carla.BoundingBox(carla.Location(x=0.0, y=0.0, z=self.shape.box_z), carla.Vector3D(*self.shape.extent))


class _Episode:
    def __init__(self, server: FakeCarlaServer, episode_id: int, town: str, carla_map: carla.Map,
                 settings: dict[str, Any]) -> None:
        self.server = server
        self.id = episode_id
        self.town = town
        self.map = carla_map
        self.settings = settings
        self.actors: dict[int, _ActorState] = {}
        self.elapsed = 0.0
        self.delta = 0.0
        self.tl_reset_time = 0.0
        self.weather = carla.WeatherParameters.ClearNoon
        self.spectator: _ActorState | None = None
        self.on_tick: dict[int, tuple[FakeClient, Callable]] = {}
        self.last_snapshot: FakeWorldSnapshot | None = None


def _default_settings() -> dict[str, Any]:
    return {"synchronous_mode": False, "no_rendering_mode": False, "fixed_delta_seconds": None, "substepping": True,
            "max_substep_delta_time": 0.01, "max_substeps": 10, "max_culling_distance": 0.0,
            "deterministic_ragdolls": False, "tile_stream_distance": 3000.0, "actor_active_distance": 2000.0,
            "spectator_as_ego": True}


def _settings_object(values: dict[str, Any]) -> carla.WorldSettings:
    settings = carla.WorldSettings()
    for key, value in values.items():
        if hasattr(settings, key):
            setattr(settings, key, value)
    return settings


class _Timeout(Exception):
    """Internal: the calling client must sleep its time-out and raise CARLA's time-out error."""

    def __init__(self, sleep: bool = True) -> None:
        super().__init__("time-out")
        self.sleep = sleep


# ----------------------------------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[tuple[str, int], FakeCarlaServer] = {}
_REGISTRY_LOCK = threading.Lock()
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def _registry_key(host: str, port: int) -> tuple[str, int]:
    name = str(host).strip().lower()
    return ("localhost" if name in _LOCAL_NAMES else name, int(port))


def lookup_server(host: str, port: int) -> FakeCarlaServer | None:
    """The started fake server listening on (host, port), if any ("localhost" and "127.0.0.1" are the same host)."""
    with _REGISTRY_LOCK:
        return _REGISTRY.get(_registry_key(host, port))


def running_servers() -> list[FakeCarlaServer]:
    with _REGISTRY_LOCK:
        return list(_REGISTRY.values())


# ----------------------------------------------------------------------------------------------------------------------
# The server

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


def _speed_limit_kmh(state: _ActorState) -> float:
    return DEFAULT_SPEED_LIMIT_KMH


def _render(pose: tuple[float, ...], width: int, height: int, fov: float) -> bytes:
    """A cheap, deterministic BGRA picture of the camera's pose: sky above a horizon set by the pitch, ground below;
    the sky's tint follows the yaw, the ground's shade the position."""
    x, y, _, pitch, yaw, _ = pose
    horizon = int(round(height / 2 + pitch / max(fov, 1.0) * height))
    horizon = min(max(horizon, 0), height)
    tint = int((yaw % 360.0) / 360.0 * 255)
    sky = bytes((235, (206 + tint) % 256, (135 + 2 * tint) % 256, 255))
    shade = 60 + int(abs(x) + abs(y)) % 64
    ground = bytes((shade, shade, shade, 255))
    return sky * (width * horizon) + ground * (width * (height - horizon))


# ----------------------------------------------------------------------------------------------------------------------
# Data objects

def _copy_vector(vector: carla.Vector3D) -> carla.Vector3D:
    return carla.Vector3D(x=vector.x, y=vector.y, z=vector.z)


@dataclass(frozen=True)
class FakeTimestamp:
    frame: int
    elapsed_seconds: float
    delta_seconds: float
    platform_timestamp: float


class FakeActorSnapshot:
    def __init__(self, actor_id: int, transform: carla.Transform, velocity: carla.Vector3D,
                 angular_velocity: carla.Vector3D, acceleration: carla.Vector3D) -> None:
        self.id = actor_id
        self._transform, self._velocity = transform, velocity
        self._angular_velocity, self._acceleration = angular_velocity, acceleration

    def get_transform(self) -> carla.Transform:
        return carla.Transform(self._transform.location, self._transform.rotation)

    def get_velocity(self) -> carla.Vector3D:
        return _copy_vector(self._velocity)

    def get_angular_velocity(self) -> carla.Vector3D:
        return _copy_vector(self._angular_velocity)

    def get_acceleration(self) -> carla.Vector3D:
        return _copy_vector(self._acceleration)


class FakeWorldSnapshot:
    """Like carla.WorldSnapshot: ``id`` (the episode), ``frame``, ``timestamp``, ``find``, ``has_actor``, iteration."""

    def __init__(self, episode_id: int, timestamp: FakeTimestamp, actors: dict[int, FakeActorSnapshot]) -> None:
        self.id = episode_id
        self.timestamp = timestamp
        self.frame = timestamp.frame
        self._actors = actors

    def find(self, actor_id: int) -> FakeActorSnapshot | None:
        return self._actors.get(int(actor_id))

    def has_actor(self, actor_id: int) -> bool:
        return int(actor_id) in self._actors

    def __iter__(self) -> Iterator[FakeActorSnapshot]:
        return iter([self._actors[k] for k in sorted(self._actors)])

    def __len__(self) -> int:
        return len(self._actors)


@dataclass
class FakeImage:
    """Like carla.Image: BGRA ``raw_data`` of ``height * width * 4`` bytes."""
    frame: int
    timestamp: float
    transform: carla.Transform
    width: int
    height: int
    fov: float
    raw_data: bytes


@dataclass
class FakeCollisionEvent:
    frame: int
    timestamp: float
    transform: carla.Transform
    actor: FakeActor
    other_actor: FakeActor
    normal_impulse: carla.Vector3D


@dataclass
class FakeLaneInvasionEvent:
    frame: int
    timestamp: float
    transform: carla.Transform
    actor: FakeActor
    crossed_lane_markings: list


@dataclass
class FakeCommandResponse:
    """Like carla.command.Response."""
    actor_id: int
    error: str = ""

    def has_error(self) -> bool:
        return bool(self.error)


# ----------------------------------------------------------------------------------------------------------------------
# Client-side handles

class FakeClient:
    """Drop-in for carla.Client(host, port, worker_threads=0); construction never fails."""

    _client_version: str | None = None

    def __init__(self, host: str = "127.0.0.1", port: int = 2000, worker_threads: int = 0) -> None:
        self._host = str(host)
        self._port = int(port)
        self._worker_threads = worker_threads
        self._timeout = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:
        return f"FakeClient({self._host}:{self._port})"

    # local
    def set_timeout(self, seconds: float) -> None:
        self._timeout = float(seconds.total_seconds() if hasattr(seconds, "total_seconds") else seconds)

    def get_timeout(self) -> float:
        """Not in carla 0.9.16's Client (a convenience of the fake): a backend must not rely on it."""
        return self._timeout

    def get_client_version(self) -> str:
        if FakeClient._client_version is None:
            FakeClient._client_version = carla.libcarla.Client("localhost", 1).get_client_version()
        return FakeClient._client_version

    # plumbing
    def _timed_out(self, sleep: bool = True) -> RuntimeError:
        server = lookup_server(self._host, self._port)
        if server is not None:
            server.stats.timeouts += 1
        if sleep:
            time.sleep(self._timeout)
        return RuntimeError(timeout_message(self._timeout, self._host, self._port))

    @contextlib.contextmanager
    def _rpc(self, episode: _Episode | None = None) -> Iterator[FakeCarlaServer]:
        """Holds the server's lock around one RPC; turns failures into CARLA's time-out (slept outside the lock)."""
        server = lookup_server(self._host, self._port)
        if server is None:
            raise self._timed_out()
        try:
            with server._lock:
                server._rpc_gate()
                if episode is not None:
                    server._check_episode(episode)
                yield server
        except _Timeout as timeout:
            raise self._timed_out(timeout.sleep) from None

    def _async(self, episode: _Episode) -> FakeCarlaServer | None:
        """For fire-and-forget calls: the server (lock NOT held) or None when the call would be dropped."""
        server = lookup_server(self._host, self._port)
        if server is None:
            return None
        with server._lock:
            try:
                server._rpc_gate(consume_timeout=False)
            except _Timeout:
                return None
        return server

    def _call_tick(self, episode: _Episode) -> int:
        server = lookup_server(self._host, self._port)
        if server is None:
            raise self._timed_out()
        try:
            return server._tick(self, episode)
        except _Timeout as timeout:
            raise self._timed_out(timeout.sleep) from None

    # RPCs
    def get_server_version(self) -> str:
        with self._rpc() as server:
            return server.version

    def get_world(self) -> FakeWorld:
        with self._rpc() as server:
            return FakeWorld(self, server._episode)

    def load_world(self, map_name: str, reset_settings: bool = True, map_layers: Any = carla.MapLayer.All) -> FakeWorld:
        with self._rpc() as server:
            return FakeWorld(self, server._load(map_name, reset_settings))

    def load_world_if_different(self, map_name: str, reset_settings: bool = True,
                                map_layers: Any = carla.MapLayer.All) -> FakeWorld | None:
        with self._rpc() as server:
            if server._town_path(map_name).stem == server._episode.town:
                return None
            return FakeWorld(self, server._load(map_name, reset_settings))

    def reload_world(self, reset_settings: bool = True) -> FakeWorld:
        with self._rpc() as server:
            return FakeWorld(self, server._load(server._episode.town, reset_settings))

    def get_available_maps(self) -> list[str]:
        with self._rpc() as server:
            return [MAPS_PREFIX + town for town in server.available_towns()]

    def get_trafficmanager(self, port: int = 8000) -> FakeTrafficManager:
        with self._rpc() as server:
            port = int(port)
            state = server._tms.get(port)
            if state is None:
                state = server._tms[port] = _TMState(port)
            return FakeTrafficManager(self, state)

    def apply_batch(self, commands: list) -> None:
        server = lookup_server(self._host, self._port)
        if server is None:
            return
        with server._lock:
            try:
                server._rpc_gate(consume_timeout=False)
            except _Timeout:
                return
            episode = server._episode
            for command in commands:
                self._apply_command(server, episode, command)

    def apply_batch_sync(self, commands: list, do_tick: bool = False) -> list[FakeCommandResponse]:
        with self._rpc() as server:
            episode = server._episode
            responses = [self._apply_command(server, episode, command) for command in commands]
        if do_tick:
            self._call_tick(episode)
        return responses

    def _apply_command(self, server: FakeCarlaServer, episode: _Episode, command: Any) -> FakeCommandResponse:
        actor_id = int(getattr(command, "actor_id", 0) or 0)
        name = type(command).__name__
        if name == "SpawnActor":
            return FakeCommandResponse(0, "batch SpawnActor is not supported by the fake CARLA server")
        state = episode.actors.get(actor_id)
        if state is None or not state.alive:
            return FakeCommandResponse(actor_id, f"{name}: actor {actor_id} not found")
        if name == "DestroyActor":
            server._destroy(state)
        elif name == "SetAutopilot":
            if state.kind != "vehicle":
                return FakeCommandResponse(actor_id, f"SetAutopilot: actor {actor_id} is not a vehicle")
            _set_autopilot(state, bool(command.enabled), int(command.tm_port))
        elif name == "ApplyVehicleControl":
            if state.kind != "vehicle":
                return FakeCommandResponse(actor_id, f"ApplyVehicleControl: actor {actor_id} is not a vehicle")
            state.control = _copy_control(command.control)
        elif name == "ApplyTransform":
            _teleport(state, command.transform)
        elif name == "ApplyTargetVelocity":
            _set_velocity(state, command.velocity)
        elif name not in ("SetSimulatePhysics", "SetEnableGravity", "SetVehicleLightState"):
            return FakeCommandResponse(actor_id, f"command {name} is not supported by the fake CARLA server")
        return FakeCommandResponse(actor_id)


fake_client_factory = FakeClient


def _copy_control(control: carla.VehicleControl) -> carla.VehicleControl:
    return carla.VehicleControl(throttle=control.throttle, steer=control.steer, brake=control.brake,
                                hand_brake=control.hand_brake, reverse=control.reverse,
                                manual_gear_shift=control.manual_gear_shift, gear=control.gear)


def _set_autopilot(state: _ActorState, enabled: bool, tm_port: int) -> None:
    state.autopilot = enabled
    state.tm_port = tm_port
    state.waypoint = None


def _teleport(state: _ActorState, transform: carla.Transform) -> None:
    if state.parent is not None and state.rel_pose is not None:
        state.rel_pose = _pose_of(transform)
    else:
        state.pose = _pose_of(transform)
    state.waypoint = None


def _set_velocity(state: _ActorState, velocity: carla.Vector3D) -> None:
    state.velocity = (float(velocity.x), float(velocity.y), float(velocity.z))
    fx, fy = _forward(state.pose[4])
    state.speed = state.velocity[0] * fx + state.velocity[1] * fy


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
        with self._local()._lock:
            return FakeCarlaServer._light_phase(self._s)[0]

    @property
    def state(self) -> Any:
        return self.get_state()

    def get_elapsed_time(self) -> float:
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


# ----------------------------------------------------------------------------------------------------------------------
# Test helpers

def install(monkeypatch: Any) -> type[FakeClient]:
    """Make ``carla.Client`` the fake client for the test (modules that did ``from carla import Client`` earlier keep
    the real one: give those ``fake_client_factory``)."""
    monkeypatch.setattr(carla, "Client", FakeClient)
    return FakeClient


@contextlib.contextmanager
def serving(town_dir: str | Path, **kwargs: Any) -> Iterator[FakeCarlaServer]:
    """A started FakeCarlaServer for the ``with`` block (keyword arguments as FakeCarlaServer's); stopped after."""
    server = FakeCarlaServer(town_dir, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
