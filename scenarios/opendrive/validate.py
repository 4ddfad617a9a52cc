"""Check an OpenDRIVE file before the carla map library sees it.

The carla client's map library (`carla.Map(name, text)`) trusts its input: a road without plan-view
geometry, a lane section without its centre lane, a lane linked to a lane that does not exist, a
road naming a junction that is not there, a lane id out of int range... each ends the process with
a segmentation fault; a road 1e12 m long hangs it; a negative lane width is driven. `check_opendrive`
reads the text with xml.etree first and refuses all of that with an OpenDriveError naming the file,
the road (lane section, lane) and the bound; `scenarios.opendrive.probe` then parses what passed in a
separate process, so that a crash this check does not foresee cannot take the run down.

What is checked (OpenDRIVE 1.4, as CARLA's towns are written):
- the root is <OpenDRIVE>, without a DTD (no entities), with 1 .. MAX_ROADS roads; the elements CARLA's parser
  walks (roads, plan views, geometries, lanes, lane sections, left / centre / right, lanes, widths, signals...) stand
  inside the element OpenDRIVE puts them in;
- every numeric attribute CARLA reads is a plain decimal number (no nan, inf, hex or words), ids are integers;
- a road: a unique integer id, `junction` -1 or an existing junction, 0 < length <= MAX_ROAD_LENGTH_M;
  one <planView> of geometries that start at s = 0, follow one another without gap or overlap and end at the
  road's length, each with exactly one shape (line, arc, spiral, poly3, paramPoly3), x / y within
  MAX_ABS_COORDINATE_M, a heading within MAX_ABS_HEADING_RAD, curvatures within MAX_CURVATURE;
  road links name an existing road (with contactPoint start / end) or junction;
- one <lanes> with lane sections starting at s = 0, in order, within the road; each section has exactly one
  centre lane (id 0), left lanes 1..n and right lanes -1..-m (|id| <= MAX_LANE_ID); each of those has width
  records (1 or more) from sOffset 0, in order within the section, widths within [-WIDTH_TOLERANCE_M,
  MAX_LANE_WIDTH_M] over their whole range; lane offset, elevation and superelevation records from s = 0, in
  order, bounded (elevation slopes within MAX_ABS_SLOPE, no step of more than MAX_ELEVATION_STEP_M to a linked
  road); a lane's successor link names a lane of the next section, or of the road the road leads to; links
  between sections go both ways; first / last sections link lanes only where the road has a predecessor /
  successor (a predecessor naming no lane is let pass: CARLA's own Town07 has one);
- a junction: a unique integer id; its connections name existing roads and their lane links existing lanes;
- signals: unique ids; signal references, controllers' controls and junctions' controllers name existing ones;
- the total length of all roads is at most MAX_TOTAL_ROAD_LENGTH_M.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from collections import Counter


class OpenDriveError(ValueError):
    """An OpenDRIVE file is missing, is not OpenDRIVE, or the carla map library cannot parse it."""


# Plausibility bounds. CARLA's towns: roads up to ~1 km, 11 km of road in all, |x|, |y| < 700 m, lane widths up to
# 20 m, |lane id| <= 10, curvature up to 1 /m, lane offsets up to 15 m, elevations up to 11 m.
MAX_ROADS = 100_000
MAX_ROAD_LENGTH_M = 1e5
MAX_TOTAL_ROAD_LENGTH_M = 1e6
MAX_ABS_COORDINATE_M = 1e6  # CARLA keeps locations in float32: beyond this a centimetre is no longer resolved
MAX_ABS_HEADING_RAD = 1e3
MAX_CURVATURE = 1e3  # 1/m (a 1 mm radius)
MAX_ABS_POLY_COEFFICIENT = 1e6  # poly3 / paramPoly3 shape coefficients
MAX_LANE_ID = 100
MAX_LANE_WIDTH_M = 100.0
WIDTH_TOLERANCE_M = 1e-3  # a width polynomial may dip this far below zero (rounding at a taper's end)
MAX_ABS_LANE_OFFSET_M = 1e3
MAX_ABS_ELEVATION_M = 1e4
MAX_ABS_SLOPE = 1.0  # elevation change per metre (45 degrees; Town03's steepest is 0.41)
MAX_ELEVATION_STEP_M = 0.5  # between a road's end and the road it links to (0 in CARLA's towns)
MAX_ABS_SUPERELEVATION_RAD = math.pi
S_TOLERANCE_M = 1e-3  # geometry and lane-section positions along a road (CARLA's towns agree to 1e-6 m)
GEOMETRY_SHAPES = ("line", "arc", "spiral", "poly3", "paramPoly3")

# Numeric attributes CARLA's parser reads, per element: (required, optional).
_NUMERIC = {
    "road": (("length",), ()),
    "geometry": (("s", "x", "y", "hdg", "length"), ()),
    "arc": (("curvature",), ()),
    "spiral": (("curvStart", "curvEnd"), ()),
    "poly3": (("a", "b", "c", "d"), ()),
    "paramPoly3": (("aU", "bU", "cU", "dU", "aV", "bV", "cV", "dV"), ()),
    "elevation": (("s", "a", "b", "c", "d"), ()),
    "superelevation": (("s", "a", "b", "c", "d"), ()),
    "crossfall": (("s", "a", "b", "c", "d"), ()),
    "shape": (("s", "t", "a", "b", "c", "d"), ()),
    "laneOffset": (("s", "a", "b", "c", "d"), ()),
    "laneSection": (("s",), ()),
    "width": (("sOffset", "a", "b", "c", "d"), ()),
    "border": (("sOffset", "a", "b", "c", "d"), ()),
    "height": (("sOffset",), ("inner", "outer")),
    "roadMark": (("sOffset",), ("width", "height")),
    "speed": ((), ("sOffset",)),
    "type": ((), ("s",)),
    "signal": (("s", "t"), ("zOffset", "hOffset", "roll", "pitch", "value", "height", "width")),
    "signalReference": (("s", "t"), ()),
    "object": (("s", "t"), ("zOffset", "hdg", "roll", "pitch", "height", "width", "length", "radius",
                            "validLength")),
    "cornerLocal": (("u", "v"), ("z", "height")),
    "cornerRoad": (("s", "t"), ("dz", "height")),
    "repeat": (("s", "length", "distance"), ()),
}
# Where the elements CARLA's parser walks may stand: it takes, say, any child of <lanes> for a lane section, so a
# <left> there crashes it.
_PARENTS = {
    "header": ("OpenDRIVE",), "road": ("OpenDRIVE",), "junction": ("OpenDRIVE",), "controller": ("OpenDRIVE", "junction"),
    "planView": ("road",), "lanes": ("road",), "signals": ("road",), "objects": ("road",),
    "elevationProfile": ("road",), "lateralProfile": ("road",),
    "geometry": ("planView",), **{shape: ("geometry",) for shape in GEOMETRY_SHAPES},
    "laneOffset": ("lanes",), "laneSection": ("lanes",), "left": ("laneSection",), "center": ("laneSection",),
    "right": ("laneSection",), "lane": ("left", "center", "right"), "width": ("lane",), "border": ("lane",),
    "roadMark": ("lane",), "elevation": ("elevationProfile",), "superelevation": ("lateralProfile",),
    "signal": ("signals",), "signalReference": ("signals",), "object": ("objects",), "connection": ("junction",),
    "laneLink": ("connection",), "control": ("controller",),
}
_INTEGERS = {
    "road": ("id", "junction"),
    "junction": ("id",),
    "connection": ("incomingRoad", "connectingRoad"),
    "laneLink": ("from", "to"),
    "lane": ("id",),
}


def _fail(source: str, where: str, reason: str) -> None:
    raise OpenDriveError(f"{source}: {where}: {reason}" if where else f"{source}: {reason}")


def _where(road: ElementTree.Element | None, section: int | None = None, lane: str | None = None) -> str:
    parts = [] if road is None else [f"road {road.get('id')}"]
    if section is not None:
        parts.append(f"lane section {section}")
    if lane is not None:
        parts.append(f"lane {lane}")
    return ", ".join(parts)


def check_opendrive(text: str, source: str) -> None:
    """Raise OpenDriveError (naming `source`, the road, lane section or lane, and the bound) unless `text` is an
    OpenDRIVE document the carla map library can be given safely; see the module docstring for the rules."""
    if re.search(r"<!(DOCTYPE|ENTITY)", text[:65536]):
        _fail(source, "", "holds a DTD or entity declaration, which OpenDRIVE files do not use")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as err:
        _fail(source, "", f"not well-formed XML ({err})")
    if root.tag != "OpenDRIVE":
        _fail(source, "", f"root element is <{root.tag}>, expected <OpenDRIVE>")
    roads = root.findall("road")
    if not roads:
        _fail(source, "", "holds no <road> elements (a town needs at least one road with lanes)")
    if len(roads) > MAX_ROADS:
        _fail(source, "", f"holds {len(roads)} roads, more than the bound {MAX_ROADS}")
    _check_structure(root, source)
    _check_numbers(root, source)
    road_ids = [int(road.get("id")) for road in roads]
    if (repeated := [i for i, n in Counter(road_ids).items() if n > 1]):
        _fail(source, f"road {repeated[0]}", "the road id is used more than once")
    junctions = root.findall("junction")
    junction_ids = [int(j.get("id")) for j in junctions]
    if (repeated := [i for i, n in Counter(junction_ids).items() if n > 1]):
        _fail(source, f"junction {repeated[0]}", "the junction id is used more than once")
    by_id = dict(zip(road_ids, roads))
    sections = {}
    total = 0.0
    for road in roads:
        total += _check_road(road, set(junction_ids), by_id, source)
        sections[int(road.get("id"))] = _check_lanes(road, source)
    if total > MAX_TOTAL_ROAD_LENGTH_M:
        _fail(source, "", f"its roads are {total:.0f} m long in all, more than the bound {MAX_TOTAL_ROAD_LENGTH_M:.0f} m")
    for road in roads:
        _check_lane_links(road, by_id, sections, source)
    _check_elevation_steps(roads, by_id, source)
    for junction in junctions:
        _check_junction(junction, by_id, sections, source)
    _check_signal_references(root, roads, source)


def _check_structure(root: ElementTree.Element, source: str) -> None:
    """The elements CARLA's parser walks stand where OpenDRIVE puts them (_PARENTS)."""
    for child in root:
        road = child if child.tag == "road" else None
        if child.tag in _PARENTS and root.tag not in _PARENTS[child.tag]:
            _fail(source, _where(road), f"<{child.tag}> inside <{root.tag}>")
        for parent in child.iter():
            for element in parent:
                if element.tag in _PARENTS and parent.tag not in _PARENTS[element.tag]:
                    _fail(source, _where(road), f"<{element.tag}> inside <{parent.tag}>, expected inside "
                                                f"{' or '.join(f'<{p}>' for p in _PARENTS[element.tag])}")


def _number(value: str | None) -> float | None:
    """A finite decimal number, or None (NaN, inf, words, Python-only forms such as 1_000)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and "_" not in value else None


def _integer(value: str | None, bound: int = 2**31) -> int | None:
    """An integer within +-bound (exclusive), or None."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if abs(number) < bound and "_" not in value else None


def _check_numbers(root: ElementTree.Element, source: str) -> None:
    """Every numeric attribute a plain finite decimal, every id an integer (naming the road it is in)."""
    for child in root:
        road = child if child.tag == "road" else None
        for element in child.iter():
            tag = element.tag
            required, optional = _NUMERIC.get(tag, ((), ()))
            for name in required + optional:
                value = element.get(name)
                if value is None:
                    if name in required:
                        _fail(source, _where(road), f"<{tag}> lacks its {name!r} attribute")
                elif _number(value) is None:
                    _fail(source, _where(road), f"<{tag}> {name}={value!r} is not a finite number")
            for name in _INTEGERS.get(tag, ()):
                if _integer(element.get(name)) is None:
                    _fail(source, _where(road), f"<{tag}> {name}={element.get(name)!r} is not a 32-bit integer")
            if tag in ("predecessor", "successor"):
                if element.get("elementId") is not None or element.get("elementType") is not None:  # a road's link
                    if _integer(element.get("elementId")) is None:
                        _fail(source, _where(road), f"<{tag}> elementId={element.get('elementId')!r} is not a 32-bit "
                                                    "integer")
                elif _integer(element.get("id"), MAX_LANE_ID + 1) is None:  # a lane's link
                    _fail(source, _where(road), f"lane link <{tag}> id={element.get('id')!r} is not a lane id (an "
                                                f"integer within +-{MAX_LANE_ID})")


def _check_road(road: ElementTree.Element, junction_ids: set[int], by_id: dict, source: str) -> float:
    """The road's attributes, plan view and links; returns its length."""
    where = _where(road)
    length = float(road.get("length"))
    if not 0.0 < length <= MAX_ROAD_LENGTH_M:
        _fail(source, where, f"length {length:g} m is outside (0, {MAX_ROAD_LENGTH_M:g}] m")
    junction = int(road.get("junction"))
    if junction != -1 and junction not in junction_ids:
        _fail(source, where, f"names junction {junction}, which is not in the file")
    views = road.findall("planView")
    if len(views) != 1:
        _fail(source, where, f"has {len(views)} <planView> elements, expected one")
    geometries = views[0].findall("geometry")
    if not geometries:
        _fail(source, where, "its <planView> holds no <geometry>")
    end = 0.0
    for k, geometry in enumerate(geometries):
        s, size = float(geometry.get("s")), float(geometry.get("length"))
        label = f"plan-view geometry {k}"
        if abs(s - end) > S_TOLERANCE_M:
            _fail(source, where, f"{label} starts at s={s:g} m, expected {end:g} m (geometries follow one another "
                                 "from s=0)")
        if size < 0.0:
            _fail(source, where, f"{label} has negative length {size:g} m")
        end = s + size
        for name in ("x", "y"):
            if abs(float(geometry.get(name))) > MAX_ABS_COORDINATE_M:
                _fail(source, where, f"{label} {name}={geometry.get(name)} is beyond +-{MAX_ABS_COORDINATE_M:g} m")
        if abs(float(geometry.get("hdg"))) > MAX_ABS_HEADING_RAD:
            _fail(source, where, f"{label} hdg={geometry.get('hdg')} is beyond +-{MAX_ABS_HEADING_RAD:g} rad")
        shapes = [child for child in geometry if child.tag in GEOMETRY_SHAPES]
        if len(shapes) != 1 or len(geometry) != 1:
            _fail(source, where, f"{label} must hold exactly one of {', '.join(GEOMETRY_SHAPES)}; it holds "
                                 f"{[child.tag for child in geometry] or 'nothing'}")
        _check_shape(shapes[0], source, f"{where}, {label}")
    if abs(end - length) > S_TOLERANCE_M + 1e-9 * length:
        _fail(source, where, f"its geometries end at s={end:g} m, but the road is {length:g} m long")
    for kind in ("predecessor", "successor"):
        for link in road.findall(f"link/{kind}"):
            element_type, element_id = link.get("elementType"), link.get("elementId")
            if element_id is None:
                _fail(source, where, f"its {kind} link lacks elementId")
            if element_type == "road":
                if int(element_id) not in by_id:
                    _fail(source, where, f"its {kind} is road {element_id}, which is not in the file")
                if link.get("contactPoint") not in ("start", "end"):
                    _fail(source, where, f"its {kind} link to road {element_id} needs contactPoint start or end, "
                                         f"got {link.get('contactPoint')!r}")
            elif element_type == "junction":
                if int(element_id) not in junction_ids:
                    _fail(source, where, f"its {kind} is junction {element_id}, which is not in the file")
            else:
                _fail(source, where, f"its {kind} link has elementType {element_type!r}, expected road or junction")
    _check_profile(road, "elevationProfile/elevation", MAX_ABS_ELEVATION_M, "elevation", "m", source, MAX_ABS_SLOPE)
    _check_profile(road, "lateralProfile/superelevation", MAX_ABS_SUPERELEVATION_RAD, "superelevation", "rad", source)
    _check_profile(road, "lanes/laneOffset", MAX_ABS_LANE_OFFSET_M, "lane offset", "m", source)
    return length


def _check_shape(shape: ElementTree.Element, source: str, where: str) -> None:
    if shape.tag == "arc" and abs(float(shape.get("curvature"))) > MAX_CURVATURE:
        _fail(source, where, f"arc curvature {shape.get('curvature')} is beyond +-{MAX_CURVATURE:g} /m")
    if shape.tag == "spiral":
        for name in ("curvStart", "curvEnd"):
            if abs(float(shape.get(name))) > MAX_CURVATURE:
                _fail(source, where, f"spiral {name} {shape.get(name)} is beyond +-{MAX_CURVATURE:g} /m")
    if shape.tag in ("poly3", "paramPoly3"):
        for name, value in shape.attrib.items():
            if (number := _number(value)) is not None and abs(number) > MAX_ABS_POLY_COEFFICIENT:
                _fail(source, where, f"{shape.tag} {name}={value} is beyond +-{MAX_ABS_POLY_COEFFICIENT:g}")
        if shape.tag == "paramPoly3" and shape.get("pRange", "normalized") not in ("normalized", "arcLength"):
            _fail(source, where, f"paramPoly3 pRange {shape.get('pRange')!r} is not normalized or arcLength")


def _cubic_range(record: ElementTree.Element, span: float, derivative: bool = False) -> tuple[float, float]:
    """(least, greatest) of a record's a + b ds + c ds^2 + d ds^3 (or of its derivative) over ds in [0, span]: at the
    ends or where the derivative vanishes (pure Python: thousands of records per town)."""
    a, b, c, d = (float(record.get(k)) for k in "abcd")
    if derivative:
        a, b, c, d = b, 2.0 * c, 3.0 * d, 0.0
    span = max(span, 0.0)
    candidates = [0.0, span]
    if d != 0.0:
        disc = 4.0 * c * c - 12.0 * d * b
        if disc >= 0.0:
            root = math.sqrt(disc)
            candidates += [(-2.0 * c + root) / (6.0 * d), (-2.0 * c - root) / (6.0 * d)]
    elif c != 0.0:
        candidates.append(-b / (2.0 * c))
    try:
        values = [a + t * (b + t * (c + t * d)) for t in candidates if 0.0 <= t <= span]
    except OverflowError:
        return -math.inf, math.inf
    if not all(math.isfinite(v) for v in values):
        return -math.inf, math.inf
    return min(values), max(values)


def _elevation_at(road: ElementTree.Element, s: float) -> float:
    """The road's elevation (m) at s: its last elevation record starting at or before s (0 without records)."""
    record = None
    for candidate in road.findall("elevationProfile/elevation"):
        if float(candidate.get("s")) <= s + S_TOLERANCE_M:
            record = candidate
    if record is None:
        return 0.0
    a, b, c, d = (float(record.get(k)) for k in "abcd")
    ds = s - float(record.get("s"))
    return a + ds * (b + ds * (c + ds * d))


def _check_elevation_steps(roads: list[ElementTree.Element], by_id: dict, source: str) -> None:
    """Where a road meets the road it links to (or its junction's connecting road), their elevations agree within
    MAX_ELEVATION_STEP_M: a step makes the route planner's walk along the lane miss the lane's end and run on."""
    def end(road: ElementTree.Element, contact: str) -> float:
        return _elevation_at(road, 0.0 if contact == "start" else float(road.get("length")))

    for road in roads:
        for kind, own in (("successor", "end"), ("predecessor", "start")):
            for link in road.findall(f"link/{kind}"):
                if link.get("elementType") != "road":
                    continue
                other = by_id[int(link.get("elementId"))]
                step = abs(end(road, own) - end(other, link.get("contactPoint")))
                if step > MAX_ELEVATION_STEP_M:
                    _fail(source, _where(road), f"its {kind} road {other.get('id')} starts {step:g} m higher or lower "
                                                f"than it ends (more than {MAX_ELEVATION_STEP_M:g} m)")


def _check_profile(road: ElementTree.Element, path: str, bound: float, label: str, unit: str, source: str,
                   max_slope: float | None = None) -> None:
    """Records in order along the road, their polynomials within +-bound (and their slopes within +-max_slope)
    over their ranges."""
    length = float(road.get("length"))
    records = road.findall(path)
    starts = [float(r.get("s")) for r in records]
    if records and abs(starts[0]) > S_TOLERANCE_M:  # the carla library finds no record for s = 0 (a laneOffset: SIGSEGV)
        _fail(source, _where(road), f"its first {label} record starts at s={starts[0]:g} m; it must start at s=0")
    for k, record in enumerate(records):
        if not -S_TOLERANCE_M <= starts[k] <= length + S_TOLERANCE_M or (k and starts[k] < starts[k - 1]):
            _fail(source, _where(road), f"{label} record {k} at s={starts[k]:g} m is out of order or off the road "
                                        f"(0..{length:g} m)")
        end = starts[k + 1] if k + 1 < len(records) else length
        low, high = _cubic_range(record, end - starts[k])
        if not -bound <= low <= high <= bound:
            worst = low if abs(low) > abs(high) else high
            _fail(source, _where(road), f"{label} record {k} reaches {worst:g} {unit}, beyond +-{bound:g} {unit}")
        if max_slope is not None:
            low, high = _cubic_range(record, end - starts[k], derivative=True)
            if not -max_slope <= low <= high <= max_slope:
                worst = low if abs(low) > abs(high) else high
                _fail(source, _where(road), f"{label} record {k} has a slope of {worst:g}, beyond +-{max_slope:g}")


def _check_lanes(road: ElementTree.Element, source: str) -> list[set[int]]:
    """Lane sections and lanes of a road; returns the lane ids of each section."""
    where = _where(road)
    length = float(road.get("length"))
    blocks = road.findall("lanes")
    if len(blocks) != 1:
        _fail(source, where, f"has {len(blocks)} <lanes> elements, expected one")
    sections = blocks[0].findall("laneSection")
    if not sections:
        _fail(source, where, "its <lanes> holds no <laneSection>")
    starts = [float(section.get("s")) for section in sections]
    if abs(starts[0]) > S_TOLERANCE_M:
        _fail(source, _where(road, 0), f"starts at s={starts[0]:g} m; the first lane section starts at s=0")
    ids_of = []
    for k, section in enumerate(sections):
        here = _where(road, k)
        end = starts[k + 1] if k + 1 < len(sections) else length
        if starts[k] > length + S_TOLERANCE_M or end < starts[k]:
            _fail(source, here, f"starts at s={starts[k]:g} m: out of order or beyond the road's length {length:g} m")
        centre = section.findall("center")
        centre_lanes = centre[0].findall("lane") if len(centre) == 1 else []
        if len(centre) != 1 or len(centre_lanes) != 1 or int(centre_lanes[0].get("id")) != 0:
            _fail(source, here, "needs exactly one <center> holding exactly one lane, id 0")
        ids = {0}
        for side, sign in (("left", 1), ("right", -1)):
            blocks = section.findall(side)
            if len(blocks) > 1:
                _fail(source, here, f"has {len(blocks)} <{side}> elements")
            lanes = blocks[0].findall("lane") if blocks else []
            side_ids = sorted(sign * int(lane.get("id")) for lane in lanes)
            if side_ids != list(range(1, len(lanes) + 1)):
                expected = "1, 2, ..." if sign > 0 else "-1, -2, ..."
                _fail(source, here, f"its {side} lanes have ids {[sign * i for i in side_ids]}, expected {expected} "
                                    "(each once)")
            if len(lanes) > MAX_LANE_ID:
                _fail(source, here, f"has {len(lanes)} {side} lanes, more than {MAX_LANE_ID}")
            ids.update(sign * i for i in side_ids)
            for lane in lanes:
                _check_widths(road, k, lane, end - starts[k], source)
        other = [child.tag for child in section if child.tag not in ("left", "center", "right", "userData")]
        if "lane" in other:
            _fail(source, here, "holds a <lane> outside <left>, <center> and <right>")
        ids_of.append(ids)
    return ids_of


def _check_widths(road: ElementTree.Element, section: int, lane: ElementTree.Element, span: float, source: str) -> None:
    """Width records of a lane: at least one (the carla library falls back to a default width, which shifts the
    lanes outside it off their successors: the route planner's walk along such a lane never reaches its end), in
    order within the section, widths within [-tolerance, MAX_LANE_WIDTH_M]."""
    here = _where(road, section, lane.get("id"))
    records = lane.findall("width")
    if not records:
        _fail(source, here, "has no <width> record")
    offsets = [float(w.get("sOffset")) for w in records]
    if abs(offsets[0]) > S_TOLERANCE_M:
        _fail(source, here, f"its first width record starts at sOffset {offsets[0]:g} m; it must start at 0")
    for k, record in enumerate(records):
        if not -S_TOLERANCE_M <= offsets[k] <= span + S_TOLERANCE_M or (k and offsets[k] < offsets[k - 1]):
            _fail(source, here, f"width record {k} at sOffset {offsets[k]:g} m is out of order or beyond the lane "
                                f"section (0..{span:g} m)")
        end = offsets[k + 1] if k + 1 < len(records) else span
        low, high = _cubic_range(record, end - offsets[k])
        if low < -WIDTH_TOLERANCE_M:
            _fail(source, here, f"width record {k} is negative ({low:g} m) within its range; lane widths must be >= 0")
        if high > MAX_LANE_WIDTH_M:
            _fail(source, here, f"width record {k} reaches {high:g} m, beyond {MAX_LANE_WIDTH_M:g} m")


def _contact_section(road: ElementTree.Element, contact: str | None, sections: dict) -> set[int] | None:
    ids = sections[int(road.get("id"))]
    return ids[0] if contact == "start" else ids[-1] if contact == "end" else None


def _check_lane_links(road: ElementTree.Element, by_id: dict, sections: dict, source: str) -> None:
    """A lane's successor names a lane of the next section, or of the road (contact point) this road leads to; lane
    links between two sections of the road go both ways; a first (last) section's lanes name predecessors
    (successors) only where the road has a predecessor (successor). Lanes of CARLA's towns all do so; the carla
    library crashes on a lane named as a neighbour's predecessor that does not name it back."""
    ids_of = sections[int(road.get("id"))]
    road_link = road.find("link/successor")
    blocks = road.findall("lanes/laneSection")
    lanes_of = [{int(lane.get("id")): lane for lane in section.iter("lane")} for section in blocks]
    for k, section in enumerate(blocks):
        if k + 1 < len(ids_of):
            target, label = ids_of[k + 1], f"lane section {k + 1}"
        elif road_link is not None and road_link.get("elementType") == "road":
            other = by_id[int(road_link.get("elementId"))]
            target, label = _contact_section(other, road_link.get("contactPoint"), sections), f"road {other.get('id')}"
        else:
            target, label = None, None  # into a junction (its connections link the lanes) or nowhere
        for lane in section.iter("lane"):
            for link in lane.findall("link/successor"):
                if road_link is None and k + 1 == len(blocks):
                    _fail(source, _where(road, k, lane.get("id")), f"names successor lane {link.get('id')}, but the "
                                                                   "road has no successor")
                if target is not None and int(link.get("id")) not in target:
                    _fail(source, _where(road, k, lane.get("id")), f"its successor is lane {link.get('id')} of "
                                                                   f"{label}, which has no such lane")
    if road.find("link/predecessor") is None:
        for lane in blocks[0].iter("lane"):
            if lane.find("link/predecessor") is not None:
                _fail(source, _where(road, 0, lane.get("id")), "names a predecessor lane, but the road has no "
                                                               "predecessor")
    for k in range(len(blocks) - 1):
        here, after = lanes_of[k], lanes_of[k + 1]
        for lane_id, lane in here.items():
            for link in lane.findall("link/successor"):
                following = after.get(int(link.get("id")))
                if following is not None and lane_id not in _linked(following, "predecessor"):
                    _fail(source, _where(road, k, str(lane_id)), f"names lane {link.get('id')} of lane section {k + 1} "
                                                                 "as its successor, which does not name it back")
        for lane_id, lane in after.items():
            for link in lane.findall("link/predecessor"):
                before = here.get(int(link.get("id")))
                if before is not None and lane_id not in _linked(before, "successor"):
                    _fail(source, _where(road, k + 1, str(lane_id)), f"names lane {link.get('id')} of lane section {k} "
                                                                     "as its predecessor, which does not name it back")


def _linked(lane: ElementTree.Element, kind: str) -> list[int]:
    return [int(link.get("id")) for link in lane.findall(f"link/{kind}")]


def _check_signal_references(root: ElementTree.Element, roads: list[ElementTree.Element], source: str) -> None:
    """Signal ids unique; every signal reference and controller entry names a signal of the file; junction
    controllers name controllers of the file (the carla library follows each name blindly)."""
    signals = [(road, signal.get("id")) for road in roads for signal in road.findall("signals/signal")]
    ids = Counter(signal_id for _, signal_id in signals)
    for road, signal_id in signals:
        if signal_id is None or ids[signal_id] > 1:
            _fail(source, _where(road), f"signal id {signal_id!r} is missing or used more than once")
    for road in roads:
        for reference in road.findall("signals/signalReference"):
            if reference.get("id") not in ids:
                _fail(source, _where(road), f"signal reference names signal {reference.get('id')!r}, which is not in "
                                            "the file")
    controllers = Counter(controller.get("id") for controller in root.findall("controller"))
    for controller in root.findall("controller"):
        if controller.get("id") is None or controllers[controller.get("id")] > 1:
            _fail(source, f"controller {controller.get('id')}", "the controller id is missing or used more than once")
        for control in controller.findall("control"):
            if control.get("signalId") not in ids:
                _fail(source, f"controller {controller.get('id')}", f"controls signal {control.get('signalId')!r}, "
                                                                    "which is not in the file")
    for junction in root.findall("junction"):
        for controller in junction.findall("controller"):
            if controller.get("id") not in controllers:
                _fail(source, f"junction {junction.get('id')}", f"names controller {controller.get('id')!r}, which is "
                                                                "not in the file")


def _check_junction(junction: ElementTree.Element, by_id: dict, sections: dict, source: str) -> None:
    """Connections name existing roads, their lane links existing lanes (at the contact ends)."""
    where = f"junction {junction.get('id')}"
    for connection in junction.findall("connection"):
        incoming, connecting = int(connection.get("incomingRoad")), int(connection.get("connectingRoad"))
        for label, road_id in (("incomingRoad", incoming), ("connectingRoad", connecting)):
            if road_id not in by_id:
                _fail(source, where, f"connection {connection.get('id')}: {label} {road_id} is not in the file")
        contact = connection.get("contactPoint")
        if contact not in ("start", "end"):
            _fail(source, where, f"connection {connection.get('id')}: contactPoint {contact!r}, expected start or end")
        into = _contact_section(by_id[connecting], contact, sections)
        incoming_road = by_id[incoming]
        ends = [("end" if kind == "successor" else "start") for kind in ("successor", "predecessor")
                for link in incoming_road.findall(f"link/{kind}")
                if link.get("elementType") == "junction" and link.get("elementId") == junction.get("id")]
        out_of = set().union(*(_contact_section(incoming_road, end, sections) for end in (ends or ["start", "end"])))
        for lane_link in connection.findall("laneLink"):
            source_lane, target_lane = int(lane_link.get("from")), int(lane_link.get("to"))
            if source_lane not in out_of or target_lane not in into:
                _fail(source, where, f"connection {connection.get('id')}: lane link {source_lane} -> {target_lane} "
                                     f"names a lane that road {incoming} or road {connecting} does not have there")


__all__ = ["OpenDriveError", "check_opendrive"]
