"""OpenDRIVE files the carla map library would crash, hang on or misread are refused before it sees them.

Each input below ended the process with a segmentation fault (or hung it, or was driven) when handed to
`carla.Map`; now `load_town` answers with an OpenDriveError naming the file and the road, lane section or lane.
What the check cannot foresee is parsed first in a probe process (`scenarios.opendrive.probe`).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from scenarios.opendrive import OpenDriveError, check_opendrive, load_town
from scenarios.opendrive import probe as probe_module
from scenarios.opendrive.probe import probe_opendrive
from tests.scenarios.xodr_samples import HEADER, town_text
from tests.scenarios.xodr_samples import road as _road

carla = pytest.importorskip("carla", reason="the carla client package reads OpenDRIVE towns (pip install 'w0sim[carla]')")

def _write(tmp_path, text: str, name: str = "Town99"):
    path = tmp_path / f"{name}.xodr"
    path.write_text(text)
    return path


def test_the_minimal_town_loads(tmp_path):
    town = load_town(_write(tmp_path, town_text()))
    assert len(town.road_map.lanes) == 2 and town.name == "Town99"


LANE_SECTION = ('<lanes><laneSection s="0">{center}<right><lane id="{lane}" type="driving"><link><successor id="{succ}"/>'
                '</link><width sOffset="0" a="{width}" b="0" c="0" d="0"/></lane></right></laneSection></lanes>')
CENTER = '<center><lane id="0" type="none"/></center>'
CRASHES = {  # each of these crashed the process in carla.Map (SIGSEGV) before
    "a road without plan view": (_road(0, 1, 0.0, plan=""), "road 0: has 0 <planView> elements"),
    "a plan view without geometry": (_road(0, 1, 0.0, plan="<planView/>"), "road 0: its <planView> holds no <geometry>"),
    "a geometry without a shape": (_road(0, 1, 0.0, plan='<planView><geometry s="0" x="0" y="0" hdg="0" length="50"/>'
                                                         '</planView>'), "plan-view geometry 0 must hold exactly one"),
    "a geometry not starting at s=0": (_road(0, 1, 0.0, plan='<planView><geometry s="3" x="0" y="0" hdg="0" '
                                                            'length="50"><line/></geometry></planView>'),
                                       "plan-view geometry 0 starts at s=3 m, expected 0 m"),
    "a lane section without its centre lane": (_road(0, 1, 0.0, lanes=LANE_SECTION.format(center="", lane=-1, succ=-1,
                                                                                          width=3.5)),
                                               "road 0, lane section 0: needs exactly one <center>"),
    "a lane linked to a lane that does not exist": (_road(0, 1, 0.0, lanes=LANE_SECTION.format(
        center=CENTER, lane=-1, succ=1, width=3.5)), "road 0, lane section 0, lane -1: its successor is lane 1 of road 1"),
    "a lane id beyond int32": (_road(0, 1, 0.0, lanes=LANE_SECTION.format(center=CENTER, lane=-2147483649, succ=-1,
                                                                          width=3.5)), "<lane> id='-2147483649'"),
    "a right lane with a positive id": (_road(0, 1, 0.0, lanes=LANE_SECTION.format(center=CENTER, lane=1, succ=-1,
                                                                                   width=3.5)),
                                        r"its right lanes have ids \[1\]"),
    "a road without its junction attribute": (_road(0, 1, 0.0).replace(' junction="-1"', ""), "<road> junction=None"),
    "a road naming a junction that is not there": (_road(0, 1, 0.0, junction="5"), "road 0: names junction 5"),
    "a lane offset from s=10 (Town02 without its first lane offset)": (_road(0, 1, 0.0).replace(
        "<lanes>", '<lanes><laneOffset s="10" a="0" b="0" c="0" d="0"/>'),
        "road 0: its first lane offset record starts at s=10 m"),
    "a signal reference to no signal": (_road(0, 1, 0.0).replace(
        "</road>", '<signals><signalReference id="459" s="1" t="0" orientation="-"/></signals></road>'),
        "road 0: signal reference names signal '459'"),
}
REFUSED = {
    "no roads at all": (HEADER + "</OpenDRIVE>", "holds no <road> elements"),
    "a negative lane width (was driven)": (town_text(_road(0, 1, 0.0, lanes=LANE_SECTION.format(
        center=CENTER, lane=-1, succ=-1, width=-3.5))), r"road 0, lane section 0, lane -1: width record 0 is negative "
                                                        r"\(-3.5 m\)"),
    "a road 1e12 m long (hung)": (town_text(_road(0, 1, 0.0, length="1e12")), r"road 0: length 1e\+12 m is outside"),
    "an infinite coordinate": (town_text(_road(0, 1, 0.0).replace('x="0.0"', 'x="inf"')), "x='inf' is not a finite"),
    "a huge coordinate": (town_text(_road(0, 1, 1e300)), r"x=1e\+300 is beyond \+-1e\+06 m"),
    "a heading of 1e300 (a GEOS error)": (town_text(_road(0, 1, 0.0).replace('hdg="0"', 'hdg="1e300"')),
                                         r"hdg=1e300 is beyond"),
    "a lane section beyond its road": (town_text(_road(0, 1, 0.0).replace('<laneSection s="0">',
                                                                          '<laneSection s="1e300">')),
                                       "the first lane section starts at s=0"),
    "two roads with one id": (town_text(_road(1, 0, 0.0)), "road 1: the road id is used more than once"),
    "a DTD": ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + town_text()[len('<?xml version="1.0"?>\n'):],
              "DTD or entity"),
    "a <left> outside a lane section (crashed carla in a mutated Town02)": (town_text(_road(0, 1, 0.0).replace(
        "<lanes><laneSection", '<lanes><left s="0" a="0" b="0" c="0" d="0"/><laneSection')),
        "road 0: <left> inside <lanes>, expected inside <laneSection>"),
    "a steep elevation (hung the route planner in a mutated Town07)": (town_text(_road(0, 1, 0.0).replace(
        "<planView>", '<elevationProfile><elevation s="0" a="0" b="0" c="-3" d="0"/></elevationProfile><planView>')),
        "road 0: elevation record 0 has a slope of -300, beyond"),
    "a 5 m step between linked roads": (town_text(_road(0, 1, 0.0).replace(
        "<planView>", '<elevationProfile><elevation s="0" a="5" b="0" c="0" d="0"/></elevationProfile><planView>')),
        "road 0: its successor road 1 starts 5 m higher or lower"),
    "lane links between sections not mirrored (crashed carla in a mutated Town03)": (town_text(_road(0, 1, 0.0, lanes=(
        '<lanes><laneSection s="0">' + CENTER + '<right><lane id="-1" type="driving"><link><predecessor id="-1"/></link>'
        '<width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane></right></laneSection><laneSection s="25">' + CENTER +
        '<right><lane id="-1" type="driving"><link><predecessor id="-1"/><successor id="-1"/></link>'
        '<width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane></right></laneSection></lanes>'))),
        "road 0, lane section 1, lane -1: names lane -1 of lane section 0 as its predecessor, which does not name it"),
    "lane links on a road without links (crashed carla in a mutated Town03)": (town_text(_road(0, 1, 0.0).replace(
        '<link><predecessor elementType="road" elementId="1" contactPoint="end"/>'
        '<successor elementType="road" elementId="1" contactPoint="start"/></link>', "<link/>")),
        "road 0, lane section 0, lane -1: names successor lane -1, but the road has no successor"),
    "a lane without width (hung the route planner in a mutated Town03)": (town_text(_road(0, 1, 0.0).replace(
        '<width sOffset="0" a="3.5" b="0" c="0" d="0"/>', "")), "road 0, lane section 0, lane -1: has no <width> record"),
    "a controller of no signal": (town_text(tail='<controller id="7"><control signalId="3" type=""/></controller>'),
                                  "controller 7: controls signal '3'"),
    "two controllers with one id": (town_text(tail='<controller id="7"/><controller id="7"/>'),
                                    "controller 7: the controller id is missing or used more than once"),
    "a junction connection to a road that is not there": (town_text(tail=(
        '<junction id="9" name=""><connection id="4" incomingRoad="0" connectingRoad="8" contactPoint="start">'
        '<laneLink from="-1" to="-1"/></connection></junction>')),
        "junction 9: connection 4: connectingRoad 8 is not in the file"),
}


@pytest.mark.parametrize("case", [*CRASHES, *REFUSED])
def test_files_that_crash_hang_or_mislead_carla_are_refused_naming_the_road(tmp_path, case):
    text, message = CRASHES[case] if case in CRASHES else REFUSED[case]
    text = town_text(text) if case in CRASHES else text
    path = _write(tmp_path, text)
    with pytest.raises(OpenDriveError, match=message) as info:
        load_town(path)
    assert str(path) in str(info.value)


def test_what_the_check_misses_is_parsed_in_a_probe_process_that_takes_the_crash(tmp_path, monkeypatch):
    """The probe itself: a text check_opendrive refuses (a road without plan view) crashes carla.Map, in the probe
    process only; the answer is cached per text."""
    text = town_text(CRASHES["a road without plan view"][0])
    with pytest.raises(OpenDriveError):
        check_opendrive(text, "x")
    crash = subprocess.run([sys.executable, "-c", "import sys, carla; carla.Map('t', sys.stdin.read())"], input=text,
                           text=True, capture_output=True, timeout=120)
    assert crash.returncode < 0  # the library really dies on it (SIGSEGV)
    monkeypatch.setattr(probe_module, "_verdicts", {})
    with pytest.raises(OpenDriveError, match=r"town\.xodr: the carla map library crashed \(SIGSEGV\)"):
        probe_opendrive(text, "town.xodr")
    monkeypatch.setattr(probe_module.subprocess, "run", lambda *a, **k: pytest.fail("probed twice"))
    with pytest.raises(OpenDriveError, match="crashed"):
        probe_opendrive(text, "again.xodr")


def test_a_probe_that_runs_too_long_is_an_error(monkeypatch):
    monkeypatch.setattr(probe_module, "_verdicts", {})
    monkeypatch.setattr(probe_module, "PROBE_TIMEOUT_S", 0.001)
    with pytest.raises(OpenDriveError, match=r"slow\.xodr: the carla map library did not finish parsing it within"):
        probe_opendrive(town_text(), "slow.xodr")


def test_a_carla_route_with_a_crashing_town_fails_with_a_reason_not_a_crash(tmp_path):
    from scenarios.splits import resolve_split

    _write(tmp_path, town_text(CRASHES["a lane section without its centre lane"][0]), "Town98")
    routes = tmp_path / "routes.xml"
    routes.write_text("<routes><route id='0' town='Town98'><waypoint x='5' y='0'/><waypoint x='40' y='0'/></route>"
                      "</routes>")
    ref = resolve_split(f"carla:{routes}", town_dir=tmp_path)[0]
    with pytest.raises(OpenDriveError, match=r"Town98\.xodr: road 0, lane section 0: needs exactly one <center>"):
        ref.load()
