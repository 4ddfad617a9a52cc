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

Layout: this module is the entry point (``install``, ``serving`` and every public name of the fake); the code lives in
the package ``tests/fakes/fake_carla/``: ``towns`` (offline maps), ``geometry``, ``blueprints`` (catalog and shapes),
``state`` (server-side state), ``registry`` (servers by host and port), ``server`` (``FakeCarlaServer``: failures,
ticking, motion, sensors), ``data`` (snapshots, images, events), ``client`` (``FakeClient``) and ``world`` (the world,
actor and traffic-manager handles).

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
from pathlib import Path
from typing import Any, Iterator

import carla

from tests.fakes.fake_carla.blueprints import FakeActorAttribute, FakeBlueprint, FakeBlueprintLibrary, NotFoundError
from tests.fakes.fake_carla.client import DEFAULT_TIMEOUT_S, MAPS_PREFIX, FakeClient, fake_client_factory
from tests.fakes.fake_carla.constants import timeout_message
from tests.fakes.fake_carla.data import (
    FakeActorSnapshot,
    FakeCollisionEvent,
    FakeCommandResponse,
    FakeImage,
    FakeLaneInvasionEvent,
    FakeTimestamp,
    FakeWorldSnapshot,
)
from tests.fakes.fake_carla.registry import lookup_server, running_servers
from tests.fakes.fake_carla.server import (
    AUTOPILOT_LATERAL_BAND,
    AUTOPILOT_LIMIT_FRACTION,
    AUTOPILOT_MAX_SPEED,
    AUTOPILOT_RELAX_S,
    AUTOPILOT_STOP_DECEL,
    AUTOPILOT_STOP_GAP,
    BRAKE_DECEL,
    CARLA_VERSION,
    DEFAULT_DT,
    DRAG,
    EXPIRED_EPISODE,
    FAILURE_KINDS,
    MAX_WHEEL_ANGLE,
    SPAWN_COLLISION,
    THROTTLE_ACCEL,
    FakeCarlaServer,
)
from tests.fakes.fake_carla.state import DEFAULT_SPEED_LIMIT_KMH, FakeServerStats
from tests.fakes.fake_carla.towns import TRAFFIC_LIGHT_TYPE, load_map, shared_town_dir
from tests.fakes.fake_carla.world import (
    FakeActor,
    FakeActorList,
    FakeSensor,
    FakeTrafficLight,
    FakeTrafficManager,
    FakeVehicle,
    FakeWalker,
    FakeWorld,
)

__all__ = [
    # constants and CARLA's texts
    "CARLA_VERSION", "DEFAULT_TIMEOUT_S", "MAPS_PREFIX", "EXPIRED_EPISODE", "SPAWN_COLLISION", "FAILURE_KINDS",
    "TRAFFIC_LIGHT_TYPE", "DEFAULT_SPEED_LIMIT_KMH", "DEFAULT_DT", "THROTTLE_ACCEL", "BRAKE_DECEL", "DRAG",
    "MAX_WHEEL_ANGLE", "AUTOPILOT_MAX_SPEED", "AUTOPILOT_LIMIT_FRACTION", "AUTOPILOT_RELAX_S", "AUTOPILOT_STOP_DECEL",
    "AUTOPILOT_STOP_GAP", "AUTOPILOT_LATERAL_BAND", "timeout_message", "NotFoundError",
    # towns
    "load_map", "shared_town_dir",
    # blueprints
    "FakeActorAttribute", "FakeBlueprint", "FakeBlueprintLibrary",
    # the server
    "FakeServerStats", "FakeCarlaServer", "lookup_server", "running_servers",
    # what it hands out
    "FakeTimestamp", "FakeActorSnapshot", "FakeWorldSnapshot", "FakeImage", "FakeCollisionEvent",
    "FakeLaneInvasionEvent", "FakeCommandResponse",
    # client-side handles
    "FakeClient", "fake_client_factory", "FakeActorList", "FakeWorld", "FakeActor", "FakeVehicle", "FakeWalker",
    "FakeSensor", "FakeTrafficLight", "FakeTrafficManager",
    # test helpers
    "install", "serving",
]


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
