"""CARLA towns (OpenDRIVE) as w0sim road maps: lanes, areas, traffic lights, stop signs, speed limits."""
from scenarios.opendrive.frames import carla_to_local, local_to_carla
from scenarios.opendrive.town import OpenDriveError, Town, load_town, parse_xodr, save_town_overview
from scenarios.opendrive.validate import check_opendrive

__all__ = [
    "OpenDriveError", "Town", "carla_to_local", "check_opendrive", "load_town", "local_to_carla", "parse_xodr",
    "save_town_overview",
]
