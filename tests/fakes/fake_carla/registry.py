"""Where started fake CARLA servers are found by (host, port): the registry behind ``lookup_server``."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakes.fake_carla.server import FakeCarlaServer


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
