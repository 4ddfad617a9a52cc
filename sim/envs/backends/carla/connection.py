"""Connecting to a CARLA server: the client with its timeout, the version check, and restarting a dead server."""
from __future__ import annotations

import re
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from sim.envs.backends.carla.settings import SUPPORTED_SERVER_VERSIONS, CarlaSettings
from sim.envs.backends.failures import SimulatorUnavailable

ClientFactory = Callable[[str, int], object]
RESTART_POLL_S = 2.0


class CarlaVersionError(RuntimeError):
    """The server is a CARLA version this backend does not drive."""


class CarlaVersionWarning(UserWarning):
    """Client and server versions differ (CARLA itself warns; users report anything from nothing to crashes)."""


def import_carla():
    try:
        import carla
    except ImportError as err:
        raise ImportError("the CARLA backend needs the carla client: pip install 'w0sim[carla]' (wheels exist for "
                          f"CPython 3.10-3.12) ({err})") from None
    return carla


@dataclass
class Connection:
    """A client whose server answered, and both versions."""

    client: object
    server_version: str
    client_version: str


def _release(version: str) -> str:
    """'0.9.15' of '0.9.15', '0.9.15-dirty' or '0.9.15.2'."""
    found = re.match(r"\d+\.\d+\.\d+", version.strip())
    return found.group(0) if found else version.strip()


def connect(settings: CarlaSettings, client_factory: ClientFactory | None = None) -> Connection:
    """A client of the server at `settings.host:port`, checked by asking its version within `settings.timeout_s`.

    SimulatorUnavailable names the address and the timeout when nothing answers; CarlaVersionError when the server is
    not one of SUPPORTED_SERVER_VERSIONS; a CarlaVersionWarning when client and server releases differ."""
    factory = client_factory or import_carla().Client
    address = settings.address
    try:
        client = factory(settings.host, settings.port)
        client.set_timeout(float(settings.timeout_s))
        server_version = str(client.get_server_version())
    except RuntimeError as err:
        raise SimulatorUnavailable(f"no CARLA server answered at {address} within {settings.timeout_s:g} s ({err}); "
                                   f"start one (see the README's 'CARLA server' section) or point --carla-host and "
                                   f"--carla-port at it") from None
    client_version = str(client.get_client_version())
    server, own = _release(server_version), _release(client_version)
    if server not in SUPPORTED_SERVER_VERSIONS:
        raise CarlaVersionError(f"the CARLA server at {address} is version {server_version}; w0sim drives "
                                f"{' and '.join(SUPPORTED_SERVER_VERSIONS)}")
    if server != own:
        warnings.warn(f"the carla client is {client_version} and the server at {address} is {server_version}; install "
                      f"the matching client (pip install carla=={server}, or the carla-0-9-15 rebuild for 0.9.15 on "
                      f"Python 3.11)", CarlaVersionWarning, stacklevel=2)
    return Connection(client, server_version, client_version)


def restart_server(settings: CarlaSettings, client_factory: ClientFactory | None = None,
                   log: Callable[[str], None] | None = None) -> Connection:
    """Run `settings.restart_command` (a shell command that restarts the server, e.g. a `docker restart` or a script
    that kills CarlaUE4 and launches it again), then wait up to `settings.restart_wait_s` for the server to answer.
    Raises SimulatorUnavailable when there is no command, it fails, or the server stays silent."""
    if not settings.restart_command:
        raise SimulatorUnavailable(f"the CARLA server at {settings.address} is down and no restart command was given "
                                   "(--carla-restart)")
    if log:
        log(f"restarting the CARLA server at {settings.address}: {settings.restart_command}")
    done = subprocess.run(settings.restart_command, shell=True, capture_output=True, text=True,
                          timeout=settings.restart_wait_s)
    if done.returncode != 0:
        raise SimulatorUnavailable(f"the restart command {settings.restart_command!r} exited with {done.returncode}: "
                                   f"{(done.stderr or done.stdout).strip()[-500:]}")
    deadline = time.monotonic() + settings.restart_wait_s
    while True:
        try:
            return connect(settings, client_factory)
        except SimulatorUnavailable:
            if time.monotonic() >= deadline:
                raise SimulatorUnavailable(f"the CARLA server at {settings.address} did not answer within "
                                           f"{settings.restart_wait_s:g} s of its restart command") from None
            time.sleep(RESTART_POLL_S)


__all__ = ["CarlaVersionError", "CarlaVersionWarning", "ClientFactory", "Connection", "connect", "import_carla",
           "restart_server"]
