"""Fuzz: mutated Leaderboard route files (attribute values, elements deleted, repeated or renamed, bytes cut or
flipped) either read as routes with finite waypoints or raise RouteFileError naming the file; a route that reads
densifies on its town into a route of some length, or raises RouteFileError."""
from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from scenarios.leaderboard import MAX_ABS_WAYPOINT_M, LeaderboardRoute, RouteFileError, densify, read_routes
from tests.fuzz.xml_mutation import mutate_xml
from tests.scenarios.xodr_samples import town_text

ROUTES = """<routes>
<route id="0" town="Town99"><waypoint x="10" y="1.75" z="0" yaw="0"/><waypoint x="40" y="1.75" z="0" yaw="0"/>
<waypoint x="90" y="1.75" z="0" yaw="0"/></route>
<route id="1" town="Town99"><weather cloudiness="5"/><waypoints><position x="5" y="1.75" z="0"/>
<position x="45" y="1.75" z="0"/></waypoints></route>
</routes>"""
VALUES = ["", "nan", "inf", "-inf", "1e300", "-1e300", "1e9", "1e-300", "-1", "0", "7", "2.5", "abc", " 3 ", "1_0",
          "0x10", "Town99", "../Town99", "Town 99", "45", "10"]
TAGS = ["route", "routes", "waypoint", "waypoints", "position", "weather", "scenario"]


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    from scenarios.opendrive import load_town

    path = tmp_path_factory.mktemp("fuzz_routes_town") / "Town99.xodr"
    path.write_text(town_text())
    return load_town(path)


def reads_or_refuses(path) -> list[LeaderboardRoute] | None:
    try:
        routes = read_routes(path)
    except RouteFileError as exc:
        assert str(path) in str(exc)
        return None
    for route in routes:
        assert route.route_id.isdigit() and route.town.replace("_", "").replace("-", "").isalnum()
        assert len(route.carla_xyz) >= 2 and np.isfinite(route.carla_xyz).all()
        assert np.abs(route.carla_xyz).max() <= MAX_ABS_WAYPOINT_M
    return routes


@settings(max_examples=30)
@given(st.data())
def test_mutated_route_files_read_or_are_refused_and_densify_or_are_refused(tmp_path, town, data):
    root = ElementTree.fromstring(ROUTES)
    mutate_xml(data, root, VALUES, TAGS, max_edits=4)
    text = ElementTree.tostring(root)
    if data.draw(st.booleans()):
        text = text[: data.draw(st.integers(0, len(text)))]
    path = tmp_path / "routes.xml"
    path.write_bytes(text)
    routes = reads_or_refuses(path)
    event("refused" if routes is None else "read")
    for route in routes or []:
        if route.town != "Town99":
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dense = densify(town, route)
        except RouteFileError as exc:
            assert str(path) in str(exc)
            event("densify refused")
            continue
        event("densified")
        assert len(dense.points) >= 2 and np.isfinite(dense.points).all() and math.isfinite(dense.length_m)
        assert dense.lane_ids


@given(st.binary(max_size=2048))
def test_garbage_bytes_are_refused(tmp_path, data):
    path = tmp_path / "routes.xml"
    path.write_bytes(data)
    assert reads_or_refuses(path) is None or data.strip().startswith(b"<")
