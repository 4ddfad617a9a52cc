"""Load a CARLA town (OpenDRIVE .xodr) into a w0sim RoadMap with signal plans, via the carla client's map library."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from scenarios.opendrive.areas import crosswalk_areas, road_areas
from scenarios.opendrive.lanes import build_lanes, sample_lanes
from scenarios.opendrive.probe import probe_opendrive
from scenarios.opendrive.signals import TRAFFIC_LIGHT, speed_limits, stop_signs, traffic_lights
from scenarios.opendrive.validate import OpenDriveError, check_opendrive
from sim.map import MapError, RoadMap
from sim.traffic import SignalPlan

_checked: set[str] = set()  # SHA-256 of texts that passed check_opendrive and the probe in this process
CARLA_MISSING = ("reading OpenDRIVE towns needs the carla client package: pip install 'w0sim[carla]' "
                 "(wheels for CPython 3.10-3.12 on Linux and Windows)")


@dataclass(frozen=True)
class Town:
    """A CARLA town as w0sim sees it: the road map, one signal plan per signalised junction, and lookups."""

    name: str
    road_map: RoadMap
    signal_plans: list[SignalPlan]
    junction_of: dict[str, int]  # connector lane id -> CARLA junction id
    lights: dict[str, tuple[str, ...]]  # light id -> connector lane ids it controls
    synthesised_lights: bool  # True where the map had no signals and lights were placed by rule
    carla_map: object = field(default=None, repr=False, compare=False)  # the parsed carla.Map (route planning)



def _import_carla():
    """The carla module, or an OpenDriveError saying how to install it."""
    try:
        import carla
    except ImportError as err:
        raise OpenDriveError(CARLA_MISSING) from err
    return carla


def parse_xodr(path: str | Path, name: str):
    """A carla.Map of an .xodr file, with errors that name the file. The text is checked first (`check_opendrive`)
    and parsed once in a probe process (`probe_opendrive`), so that a file the carla library would crash or hang
    on gives an OpenDriveError instead."""
    path = Path(path)
    if not path.is_file():
        raise OpenDriveError(f"OpenDRIVE file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise OpenDriveError(f"cannot read OpenDRIVE file {path}: {err}") from err
    if "<OpenDRIVE" not in text[:4096]:
        raise OpenDriveError(f"{path} is not an OpenDRIVE file (no <OpenDRIVE> root element)")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    if digest not in _checked:
        check_opendrive(text, str(path))
        _import_carla()
        probe_opendrive(text, str(path))
        _checked.add(digest)
    return carla_map_of(text, name, str(path))


def carla_map_of(text: str, name: str, source: str):
    """carla.Map(name, text), its errors naming `source`; the text must have passed `check_opendrive`."""
    carla = _import_carla()
    try:
        carla_map = carla.Map(name, text)
        topology = carla_map.get_topology()
    except (RuntimeError, IndexError) as err:
        raise OpenDriveError(f"carla cannot parse OpenDRIVE file {source}: {err}") from err
    if not topology:
        raise OpenDriveError(f"OpenDRIVE file {source} has no driving lanes")
    return carla_map


def load_town(path: str | Path, name: str | None = None) -> Town:
    """Read a town's .xodr into a Town: lanes sampled every ~1 m, areas, lights, stop signs, speed limits."""
    name = name or Path(path).stem
    return town_of(parse_xodr(path, name), name, str(path))


def town_of(carla_map, name: str, source: str) -> Town:
    """The Town of a parsed carla.Map; what goes wrong on the way (the carla library's errors, a road map out of
    bounds) is an OpenDriveError naming `source`."""
    try:
        sampled = sample_lanes(carla_map)
        light_of, plans = traffic_lights(carla_map, sampled)
        lanes = build_lanes(sampled, speed_limits(carla_map, sampled), light_of)
        junction_of = {lane.id: lane.junction_id for lane in sampled.values() if lane.junction_id is not None}
        road_map = RoadMap(lanes, road_areas(lanes, junction_of) + crosswalk_areas(carla_map), name=name,
                           stop_signs=stop_signs(carla_map, sampled))
        has_signals = bool(carla_map.get_all_landmarks_of_type(TRAFFIC_LIGHT))
    except (RuntimeError, IndexError, MapError, shapely.errors.GEOSException) as err:
        raise OpenDriveError(f"OpenDRIVE file {source} does not make a usable road map: {type(err).__name__}: "
                             f"{err}") from err
    lights: dict[str, list[str]] = {}
    for key, light in light_of.items():
        lights.setdefault(light, []).append(sampled[key].id)
    return Town(name, road_map, plans, junction_of, {k: tuple(v) for k, v in lights.items()},
                synthesised_lights=not has_signals, carla_map=carla_map)


def save_town_overview(town: Town, path: str | Path, max_side: int = 2048) -> np.ndarray:
    """Write a north-up PNG of the town: road surface, lanes, and light-controlled connectors highlighted."""
    import cv2

    from sim.render.bev import render_map_overview  # rendering (OpenCV) only when a picture is asked for

    route = [lane_id for lane_ids in town.lights.values() for lane_id in lane_ids]
    img = render_map_overview(town.road_map, route_lane_ids=route, max_side=max_side)
    if not cv2.imwrite(str(path), img[..., ::-1]):
        raise OSError(f"could not write {path}")
    return img
