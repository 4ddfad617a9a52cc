"""The fake ``carla.Client``: its RPCs, time-outs and batches of commands, turned into calls on the fake server."""
from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Iterator

import carla

from tests.fakes.fake_carla.constants import timeout_message
from tests.fakes.fake_carla.data import FakeCommandResponse
from tests.fakes.fake_carla.registry import lookup_server
from tests.fakes.fake_carla.state import _copy_control, _set_autopilot, _set_velocity, _teleport, _Timeout, _TMState
from tests.fakes.fake_carla.world import FakeTrafficManager, FakeWorld

if TYPE_CHECKING:
    from tests.fakes.fake_carla.server import FakeCarlaServer
    from tests.fakes.fake_carla.state import _Episode


DEFAULT_TIMEOUT_S = 5.0
MAPS_PREFIX = "/Game/Carla/Maps/"


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
