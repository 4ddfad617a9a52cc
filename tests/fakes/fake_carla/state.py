"""Server-side state of the fake CARLA server: stats, injections, actors, episodes, settings, actor-state updates."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable

import carla

from tests.fakes.fake_carla.geometry import _box_corners, _forward, _pose_of, _wrap_deg

if TYPE_CHECKING:
    from tests.fakes.fake_carla.blueprints import _Shape
    from tests.fakes.fake_carla.client import FakeClient
    from tests.fakes.fake_carla.data import FakeWorldSnapshot
    from tests.fakes.fake_carla.server import FakeCarlaServer

DEFAULT_SPEED_LIMIT_KMH = 30.0


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


def _speed_limit_kmh(state: _ActorState) -> float:
    return DEFAULT_SPEED_LIMIT_KMH


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
