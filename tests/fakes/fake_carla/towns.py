"""The towns of the fake CARLA server: offline ``carla.Map`` files parsed once per process, their traffic lights."""
from __future__ import annotations

import threading
from pathlib import Path

import carla

TRAFFIC_LIGHT_TYPE = "1000001"


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
