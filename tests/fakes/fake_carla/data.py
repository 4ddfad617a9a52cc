"""What the fake CARLA server hands out: snapshots, timestamps, camera images (and their picture), events, responses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import carla

if TYPE_CHECKING:
    from tests.fakes.fake_carla.world import FakeActor


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
