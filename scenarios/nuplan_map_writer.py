"""Write RoadMaps as a nuPlan map GeoPackage (`map.gpkg`, nuPlan's table and column names) and the maps index.

A `NuplanMapFile` creates every table, then appends maps one at a time, each in its own block of
FID_BLOCK fids (`fid_base`), so many scenes can share one city's file. Within a block, fids come from
one counter: lanes and lane connectors first, in RoadMap order (so reading back keeps the lane order),
then areas in RoadMap order (likewise), then lane groups that are not a roadblock area, then the
other rows (stop lines, boundaries, baseline paths...). `NuplanMapIds` says which fid each w0sim id
became, so a log writer can translate route roadblocks and traffic lights. nuPlan reads lane
topology only from lane connectors (exit / entry lane) and lane-group connectors; every connector
row names the intersection polygon it lies in (`intersection_fid`) and its traffic-light stop lines
(`traffic_light_stop_line_fids`, "" for none: nuPlan's LaneConnector parses a string). Links nuPlan cannot express
(lane -> lane, connector -> connector: CARLA towns have them, generated maps do not) go to the extra
attributes table `w0sim_lane_links`, created only for a map that has such links; stop signs (a CARLA
notion) are not written.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from scenarios.geopackage import append_features, create_feature_table, create_metadata_tables, encode_geometries, utm_wkt
from scenarios.nuplan_map import LANE_LINKS_TABLE, LOCATION_EPSG, MAP_VERSIONS, MAPS_INDEX_FILE
from scenarios.transverse_mercator import utm_zone
from sim.map import Lane, MapError, RoadMap

STOP_LINE_SNAP = 0.5  # m: a stop polygon this close to a lit connector's start is its stop line
STOP_LINE_DEPTH = 1.0  # m: depth of a stop line made up for a lit connector that has none
TRAFFIC_LIGHT_STOP = 2  # nuPlan stop_polygon_type_fid of a traffic-light stop line
FID_BLOCK = 1_000_000  # fids of the map appended with fid_base b are b + 1 .. b + FID_BLOCK - 1

# Table -> (geometry type or None for an attributes table, [(column, SQL type)]) after fid and geom.
SCHEMAS: dict[str, tuple[str | None, list[tuple[str, str]]]] = {
    "lanes_polygons": ("POLYGON", [
        ("lane_fid", "INTEGER"), ("lane_group_fid", "INTEGER"), ("lane_index", "INTEGER"),
        ("speed_limit_mps", "REAL"), ("left_boundary_fid", "INTEGER"), ("right_boundary_fid", "INTEGER"),
        ("from_edge_fid", "INTEGER"), ("to_edge_fid", "INTEGER"), ("creator_id", "TEXT")]),
    "lane_groups_polygons": ("POLYGON", [
        ("left_boundary_fid", "INTEGER"), ("right_boundary_fid", "INTEGER"), ("from_edge_fid", "INTEGER"),
        ("to_edge_fid", "INTEGER"), ("creator_id", "TEXT")]),
    "lane_group_connectors": ("POLYGON", [
        ("intersection_fid", "INTEGER"), ("from_lane_group_fid", "INTEGER"), ("to_lane_group_fid", "INTEGER"),
        ("left_boundary_fid", "INTEGER"), ("right_boundary_fid", "INTEGER"), ("creator_id", "TEXT")]),
    "lane_connectors": ("LINESTRING", [
        ("exit_lane_group_fid", "INTEGER"), ("exit_lane_fid", "INTEGER"), ("entry_lane_group_fid", "INTEGER"),
        ("entry_lane_fid", "INTEGER"), ("lane_group_connector_fid", "INTEGER"), ("intersection_fid", "INTEGER"),
        ("traffic_light_stop_line_fids", "TEXT"), ("speed_limit_mps", "REAL"), ("turn_type_fid", "INTEGER"),
        ("creator_id", "TEXT")]),
    "gen_lane_connectors_scaled_width_polygons": ("POLYGON", [
        ("lane_connector_fid", "INTEGER"), ("baseline_path_fid", "INTEGER"), ("left_boundary_fid", "INTEGER"),
        ("right_boundary_fid", "INTEGER")]),
    "baseline_paths": ("LINESTRING", [
        ("path_type_fid", "INTEGER"), ("lane_fid", "INTEGER"), ("lane_connector_fid", "INTEGER"),
        ("creator_id", "TEXT")]),
    "boundaries": ("LINESTRING", [("boundary_type_fid", "INTEGER"), ("creator_id", "TEXT")]),
    "intersections": ("POLYGON", [
        ("intersection_type_fid", "INTEGER"), ("is_mini", "BOOLEAN"), ("creator_id", "TEXT")]),
    "carpark_areas": ("POLYGON", [("heading", "REAL"), ("creator_id", "TEXT")]),
    "crosswalks": ("POLYGON", [("creator_id", "TEXT")]),
    "walkways": ("POLYGON", [("creator_id", "TEXT")]),
    "stop_polygons": ("POLYGON", [("stop_polygon_type_fid", "INTEGER"), ("creator_id", "TEXT")]),
    "traffic_lights": ("POINT", [("creator_id", "TEXT")]),
    "road_segments": ("POLYGON", [("creator_id", "TEXT")]),
    "generic_drivable_areas": ("POLYGON", [("creator_id", "TEXT")]),
    "meta": (None, [("key", "TEXT"), ("value", "TEXT")]),
    LANE_LINKS_TABLE: (None, [("from_lane_fid", "INTEGER"), ("to_lane_fid", "INTEGER")]),
}
AddRow = Callable[..., None]  # add(table, fid, geometry, **column values)
AREA_TABLE_OF_KIND = {"roadblock": "lane_groups_polygons", "intersection": "intersections", "carpark": "carpark_areas",
                      "crosswalk": "crosswalks", "walkway": "walkways", "stop_polygon": "stop_polygons"}


@dataclass(frozen=True)
class NuplanMapIds:
    """Which fid each w0sim id became in a written map.gpkg (the reader names everything str(fid)).

    `lanes`: lane and lane-connector id -> fid. `lane_groups`: lane group (roadblock or roadblock
    connector, the ids NAVSIM logs list as route roadblocks) -> fid. `areas`: (kind, area id) -> fid.
    `traffic_lights`: w0sim light id -> fids of the lane connectors it controls (NAVSIM logs name
    light states by lane-connector id).
    """

    lanes: dict[str, int]
    lane_groups: dict[str, int]
    areas: dict[tuple[str, str], int]
    traffic_lights: dict[str, tuple[int, ...]]

    def lane_id(self, lane_id: str) -> str:
        """The id the reader gives this lane."""
        return str(self.lanes[lane_id])

    def roadblock_id(self, lane_group: str) -> str:
        """The id the reader gives this lane group (roadblock / roadblock connector)."""
        return str(self.lane_groups[lane_group])

    def light_lane_ids(self, light_id: str) -> tuple[str, ...]:
        """Lane-connector ids (as read back) whose state is this light's state."""
        return tuple(str(fid) for fid in self.traffic_lights.get(light_id, ()))


class NuplanMapFile:
    """A nuPlan `map.gpkg` being written: every nuPlan table is created at once, then `add` appends maps. With no
    map added it is a valid city map with empty tables. It is written beside `path` and replaces the file at
    `path` on `close`; leaving the context manager on an exception (a map refused) leaves `path` as it was.

    srs "utm": coordinates are stored as given, as easting / northing of the location's UTM zone
    (exact round trip). srs "wgs84": they are taken as that UTM zone and stored as lon/lat.
    """

    def __init__(self, path: str | Path, location: str = "us-nv-las-vegas-strip", srs: str = "utm") -> None:
        if location not in LOCATION_EPSG:
            raise MapError(f"unknown nuPlan location {location!r}; expected one of {sorted(LOCATION_EPSG)}")
        if srs not in ("utm", "wgs84"):
            raise MapError(f"srs must be 'utm' or 'wgs84', got {srs!r}")
        self.path, self.location, self.epsg = Path(path), location, LOCATION_EPSG[location]
        self.srs_id = self.epsg if srs == "utm" else 4326
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.partial.unlink(missing_ok=True)
        self.db = sqlite3.connect(self.partial)
        zone_name = f"WGS 84 / UTM zone {self.epsg % 100}{'S' if self.epsg > 32700 else 'N'}"
        create_metadata_tables(self.db, [(self.epsg, zone_name, utm_wkt(self.epsg))])
        for table, (geometry_type, columns) in SCHEMAS.items():
            if table != LANE_LINKS_TABLE:  # only in files that need it
                create_feature_table(self.db, table, geometry_type, self.srs_id, columns)
        # nuPlan's loader projects every layer to meta's projectedCoordSystem.
        append_features(self.db, "meta", [(None, "projectedCoordSystem", f"EPSG:{self.epsg}"),
                                          (None, "geographicCoordSystem", "EPSG:4326"), (None, "location", location),
                                          (None, "version", MAP_VERSIONS[location])])
        self.used_blocks: set[int] = set()

    def add(self, road_map: RoadMap, fid_base: int = 0) -> NuplanMapIds:
        """Append `road_map` with fids fid_base + 1 .. fid_base + FID_BLOCK - 1; returns the id mapping."""
        if fid_base % FID_BLOCK or fid_base < 0:
            raise MapError(f"fid_base must be a non-negative multiple of {FID_BLOCK}, got {fid_base}")
        if fid_base in self.used_blocks:
            raise MapError(f"{self.path}: fid block {fid_base} already holds a map")
        layout = _Layout(road_map, fid_base)
        tables = layout.tables()
        if layout.last_fid >= fid_base + FID_BLOCK:
            raise MapError(f"map {road_map.name!r} needs {layout.last_fid - fid_base} fids, more than a block of "
                           f"{FID_BLOCK - 1}")
        self.used_blocks.add(fid_base)
        if tables[LANE_LINKS_TABLE][1] and not self._has_table(LANE_LINKS_TABLE):
            create_feature_table(self.db, LANE_LINKS_TABLE, None, self.srs_id, SCHEMAS[LANE_LINKS_TABLE][1])
        for table, (geometry_type, _) in SCHEMAS.items():
            geoms, rows = tables[table]
            blobs = None
            if geometry_type is not None and rows:
                geoms = np.asarray(geoms, dtype=object)
                blobs = encode_geometries(_to_lonlat(geoms, self.epsg) if self.srs_id == 4326 else geoms, self.srs_id)
            append_features(self.db, table, rows, blobs)
        return layout.ids

    def _has_table(self, table: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is not None

    def close(self) -> None:
        """Finish the file and put it at `path`."""
        if self.db is not None:
            self.db.commit()
            self.db.close()
            self.db = None
            self.partial.replace(self.path)

    def discard(self) -> None:
        """Drop what was written; `path` stays as it was."""
        if self.db is not None:
            self.db.close()
            self.db = None
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> NuplanMapFile:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_nuplan_map(road_map: RoadMap, path: str | Path, location: str = "us-nv-las-vegas-strip",
                     srs: str = "utm") -> NuplanMapIds:
    """Write `road_map` alone to the GeoPackage `path` (replaced if present) and return the id mapping
    (see NuplanMapFile for `srs`)."""
    with NuplanMapFile(path, location, srs) as file:
        return file.add(road_map)


def translated_map(road_map: RoadMap, offset: tuple[int, int] | np.ndarray) -> RoadMap:
    """The map moved by `offset` (x, y) metres: lanes, areas and stop signs (ids and links unchanged)."""
    shift = np.asarray(offset, dtype=np.float64)
    if not shift.any():
        return road_map
    move = lambda geom: shapely.transform(geom, lambda xy: xy + shift)  # noqa: E731
    lanes = [dataclasses.replace(lane, centerline=lane.centerline + shift, left_boundary=lane.left_boundary + shift,
                                 right_boundary=lane.right_boundary + shift) for lane in road_map.lanes]
    areas = [dataclasses.replace(area, polygon=move(area.polygon)) for area in road_map.areas]
    signs = [dataclasses.replace(sign, position=np.asarray(sign.position) + shift, trigger=move(sign.trigger))
             for sign in road_map.stop_signs]
    return RoadMap(lanes, areas, name=road_map.name, stop_signs=signs)


def write_nuplan_maps_index(maps_root: str | Path, versions: dict[str, str] | None = None) -> Path:
    """Write (or update) `<maps_root>/nuplan-maps-v1.0.json`: location -> {"version", "layers"}, like
    nuPlan's release (raster layers are not produced, so "layers" is empty). Default: all four cities."""
    index = Path(maps_root) / MAPS_INDEX_FILE
    listed = json.loads(index.read_text()) if index.is_file() else {}
    for location, version in (versions or MAP_VERSIONS).items():
        listed[location] = {"version": version, "layers": listed.get(location, {}).get("layers", {})}
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps(listed, indent=2, sort_keys=True) + "\n")
    return index


def _to_lonlat(geoms: np.ndarray, epsg: int) -> np.ndarray:
    """Geometries in the UTM zone `epsg` as WGS84 lon/lat (inverse transverse Mercator)."""
    projection = utm_zone(epsg)
    return shapely.transform(geoms, lambda xy: np.stack(projection.inverse(xy[:, 0], xy[:, 1]), -1))


class _Layout:
    """fids and table rows (geometries, tuples of fid + schema columns) of one RoadMap."""

    def __init__(self, road_map: RoadMap, fid_base: int = 0) -> None:
        self.map = road_map
        self._counter, self.last_fid = itertools.count(fid_base + 1), fid_base
        lanes = {lane.id: self.next_fid() for lane in road_map.lanes}
        areas = {(area.kind, area.id): self.next_fid() for area in road_map.areas}
        if len(areas) != len(road_map.areas):
            raise MapError(f"map {road_map.name!r}: two areas of one kind share an id")
        self.members: dict[str, list[Lane]] = {}
        for lane in road_map.lanes:
            self.members.setdefault(lane.lane_group, []).append(lane)
        self.index_in_group = {l.id: k for m in self.members.values() for k, l in enumerate(m)}
        plain_groups = [g for g, m in self.members.items() if not m[0].is_connector]
        connector_groups = [g for g, m in self.members.items() if m[0].is_connector]
        if mixed := [g for g, m in self.members.items() if len({l.is_connector for l in m}) > 1]:
            raise MapError(f"map {road_map.name!r}: lane group {mixed[0]!r} holds lanes and connectors; nuPlan keeps "
                           "roadblocks and roadblock connectors apart")
        groups = {g: areas.get(("roadblock", g)) or self.next_fid() for g in plain_groups}
        groups.update({g: self.next_fid() for g in connector_groups})
        lights: dict[str, list[int]] = {}
        for lane in road_map.lanes:
            if lane.is_connector and lane.traffic_light is not None:
                lights.setdefault(lane.traffic_light, []).append(lanes[lane.id])
        self.ids = NuplanMapIds(lanes, groups, areas, {k: tuple(v) for k, v in lights.items()})
        self.intersection_of = self._intersections()

    def next_fid(self) -> int:
        self.last_fid = next(self._counter)
        return self.last_fid

    def _intersections(self) -> dict[str, int]:
        """Connector id -> fid of the intersection polygon it lies in (the one holding the longest part of
        its centerline); connectors outside every intersection are left out (their intersection_fid is NULL)."""
        areas = [a for a in self.map.areas if a.kind == "intersection"]
        connectors = [lane for lane in self.map.lanes if lane.is_connector]
        if not areas or not connectors:
            return {}
        polygons = np.array([a.polygon for a in areas], dtype=object)
        lines = np.array([shapely.LineString(lane.centerline) for lane in connectors], dtype=object)
        line_index, area_index = shapely.STRtree(polygons).query(lines, predicate="intersects")
        inside = shapely.length(shapely.intersection(lines[line_index], polygons[area_index]))
        best: dict[int, tuple[float, int]] = {}
        for k, a, length in zip(line_index.tolist(), area_index.tolist(), inside.tolist()):
            if length > best.get(k, (0.0, -1))[0]:
                best[k] = (length, a)
        return {connectors[k].id: self.ids.areas[("intersection", areas[a].id)] for k, (_, a) in best.items()}

    def tables(self) -> dict[str, tuple[list, list[tuple]]]:
        """Table -> (geometries, rows); each row is fid followed by the schema's columns."""
        out: dict[str, tuple[list, list[tuple]]] = {name: ([], []) for name in SCHEMAS}

        def add(table: str, fid: int, geom: shapely.Geometry | None, **values: object) -> None:
            values.setdefault("creator_id", "w0sim")
            out[table][0].append(geom)
            out[table][1].append((fid, *(values.get(c) for c, _ in SCHEMAS[table][1])))

        stop_lines = self._stop_lines(add)
        self._areas(add, stop_lines)
        self._lane_groups(add)
        for lane in self.map.lanes:
            self._lane(add, lane, stop_lines)
        self._links(add)
        return out

    def _areas(self, add: AddRow, stop_lines: dict[int, list[int]]) -> None:
        """One row per area; stop polygons used as a light's stop line get type 2, others NULL (unknown)."""
        used = {fid for fids in stop_lines.values() for fid in fids}
        for area in self.map.areas:
            fid = self.ids.areas[(area.kind, area.id)]
            kind = TRAFFIC_LIGHT_STOP if fid in used else None
            add(AREA_TABLE_OF_KIND[area.kind], fid, area.polygon, stop_polygon_type_fid=kind)

    def _lane_groups(self, add: AddRow) -> None:
        """lane_groups_polygons rows for lane groups without a roadblock area (union of their lanes), and
        a lane_group_connectors row per connector group."""
        for group, fid in self.ids.lane_groups.items():
            members = self.members[group]
            if not members[0].is_connector and ("roadblock", group) in self.ids.areas:
                continue
            polygon = shapely.union_all(shapely.make_valid(np.array([l.polygon() for l in members], dtype=object)))
            if not members[0].is_connector:
                add("lane_groups_polygons", fid, polygon)
                continue
            before = [self.map.lane(p).lane_group for p in members[0].predecessors]
            after = [self.map.lane(s).lane_group for s in members[0].successors]
            inside = [self.intersection_of[l.id] for l in members if l.id in self.intersection_of]
            add("lane_group_connectors", fid, polygon,
                intersection_fid=max(set(inside), key=inside.count) if inside else None,
                from_lane_group_fid=self.ids.lane_groups.get(before[0]) if before else None,
                to_lane_group_fid=self.ids.lane_groups.get(after[0]) if after else None)

    def _lane(self, add: AddRow, lane: Lane, stop_lines: dict[int, list[int]]) -> None:
        """The rows of one lane or connector: polygon / connector row, two boundaries, baseline path."""
        fid, ids = self.ids.lanes[lane.id], self.ids
        left, right, path = self.next_fid(), self.next_fid(), self.next_fid()
        add("boundaries", left, shapely.LineString(lane.left_boundary))
        add("boundaries", right, shapely.LineString(lane.right_boundary))
        centerline = shapely.LineString(lane.centerline)
        sides = dict(left_boundary_fid=left, right_boundary_fid=right)
        if not lane.is_connector:
            add("lanes_polygons", fid, lane.polygon(), lane_fid=fid, lane_group_fid=ids.lane_groups[lane.lane_group],
                lane_index=self.index_in_group[lane.id], speed_limit_mps=lane.speed_limit, **sides)
            add("baseline_paths", path, centerline, path_type_fid=1, lane_fid=fid)
            return
        exit_lane, entry_lane = self._exit(lane), self._entry(lane)
        add("lane_connectors", fid, centerline, exit_lane_fid=ids.lanes.get(exit_lane),
            exit_lane_group_fid=self._group_fid(exit_lane), entry_lane_fid=ids.lanes.get(entry_lane),
            entry_lane_group_fid=self._group_fid(entry_lane), lane_group_connector_fid=ids.lane_groups[lane.lane_group],
            intersection_fid=self.intersection_of.get(lane.id),
            traffic_light_stop_line_fids=",".join(map(str, stop_lines.get(fid, []))),  # "" unlit: nuPlan reads a string
            speed_limit_mps=lane.speed_limit)
        add("baseline_paths", path, centerline, path_type_fid=2, lane_connector_fid=fid)
        add("gen_lane_connectors_scaled_width_polygons", self.next_fid(), lane.polygon(), lane_connector_fid=fid,
            baseline_path_fid=path, **sides)

    def _exit(self, connector: Lane) -> str | None:
        """The lane a connector leaves from: its first predecessor that is a plain lane."""
        return next((p for p in connector.predecessors if not self.map.lane(p).is_connector), None)

    def _entry(self, connector: Lane) -> str | None:
        """The lane a connector enters: its first successor that is a plain lane."""
        return next((s for s in connector.successors if not self.map.lane(s).is_connector), None)

    def _group_fid(self, lane_id: str | None) -> int | None:
        return None if lane_id is None else self.ids.lane_groups[self.map.lane(lane_id).lane_group]

    def _links(self, add: AddRow) -> None:
        """Graph edges the connector rows do not express (lane -> lane, connector -> connector...)."""
        for lane in self.map.lanes:
            for succ in lane.successors:
                next_lane = self.map.lane(succ)
                if lane.is_connector and self._entry(lane) == succ:
                    continue  # the connector's entry_lane_fid
                if next_lane.is_connector and self._exit(next_lane) == lane.id:
                    continue  # the next connector's exit_lane_fid
                add(LANE_LINKS_TABLE, self.next_fid(), None, from_lane_fid=self.ids.lanes[lane.id],
                    to_lane_fid=self.ids.lanes[succ])

    def _stop_lines(self, add: AddRow) -> dict[int, list[int]]:
        """Connector fid -> stop polygon fids for every lit connector: the map's stop polygons within
        STOP_LINE_SNAP of its start, else a stop line made up across its start (shared per start point)."""
        stops = [a for a in self.map.areas if a.kind == "stop_polygon"]
        tree = shapely.STRtree([a.polygon for a in stops])
        made: dict[tuple[float, float], int] = {}
        result = {}
        for lane in self.map.lanes:
            if not lane.is_connector or lane.traffic_light is None:
                continue
            near = tree.query(shapely.Point(lane.centerline[0]), predicate="dwithin", distance=STOP_LINE_SNAP)
            fids = [self.ids.areas[("stop_polygon", stops[k].id)] for k in sorted(near)]
            if not fids:
                key = tuple(np.round(lane.centerline[0], 3))
                if key not in made:
                    made[key] = self.next_fid()
                    add("stop_polygons", made[key], _stop_line(lane), stop_polygon_type_fid=TRAFFIC_LIGHT_STOP)
                fids = [made[key]]
            result[self.ids.lanes[lane.id]] = fids
        return result


def _stop_line(lane: Lane) -> shapely.Polygon:
    """A STOP_LINE_DEPTH deep polygon across the start of a lane, just before it."""
    direction = lane.centerline[1] - lane.centerline[0]
    back = -STOP_LINE_DEPTH * direction / np.linalg.norm(direction)
    left, right = lane.left_boundary[0], lane.right_boundary[0]
    return shapely.Polygon([left, right, right + back, left + back])
