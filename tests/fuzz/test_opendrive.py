"""Fuzz: mutated OpenDRIVE towns (attributes set to NaN, inf, huge, negative, words; attributes and elements deleted,
repeated, renamed) either load as a Town or raise OpenDriveError naming the file, never another exception and never
a crash of the process. The carla map library dies (SIGSEGV) on a quarter of such mutations when it is handed them
directly; here every one it would die on must be refused by the check before it (`check_opendrive`), not only by the
probe process behind it."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from scenarios.opendrive import OpenDriveError, Town, check_opendrive, load_town
from tests.fuzz.xml_mutation import mutate_xml
from tests.scenarios.xodr_samples import town_text

VALUES = ["", "nan", "inf", "-inf", "1e300", "-1e300", "1e9", "-1e9", "1e-300", "-1", "0", "3", "-3", "0.5", "99999",
          "2147483648", "-2147483649", "abc", "start", "end", "road", "junction", "driving", "1_0", "0x10"]
TAGS = ["road", "planView", "geometry", "line", "arc", "lanes", "laneSection", "left", "center", "right", "lane", "link",
        "predecessor", "successor", "width", "junction", "connection", "laneOffset", "signals", "signalReference"]


def _mutated(data) -> str:
    root = ElementTree.fromstring(town_text())
    mutate_xml(data, root, VALUES, TAGS, max_edits=3, include_root=False)
    return ElementTree.tostring(root, encoding="unicode")


@given(st.data())
def test_the_check_answers_every_mutation_with_nothing_or_an_opendrive_error(data):
    text = _mutated(data)
    try:
        check_opendrive(text, "town.xodr")
    except OpenDriveError as exc:
        assert str(exc).startswith("town.xodr: ")
        event("refused by the check")
    else:
        event("passed the check")


@settings(max_examples=20)
@given(st.data())
def test_mutated_towns_load_or_are_refused_and_never_crash(tmp_path_factory, data):
    pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns")
    path = tmp_path_factory.mktemp("fuzz_xodr") / "Town99.xodr"
    path.write_text(_mutated(data))
    try:
        town = load_town(path)
    except OpenDriveError as exc:
        assert str(path) in str(exc)
        assert "probe process" not in str(exc), f"the check let through a file that crashes carla: {exc}"
        event("refused")
        return
    event("loaded")
    assert isinstance(town, Town) and town.road_map.lanes
    assert all(np.isfinite(lane.centerline).all() for lane in town.road_map.lanes)
