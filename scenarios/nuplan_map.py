"""Read nuPlan map GeoPackages (`map.gpkg`) into a RoadMap with sqlite3 + shapely (no GDAL), and locate them.

Ids are the fid strings NAVSIM uses: lanes and lane connectors `str(fid)`, lane groups (roadblocks)
and lane-group connectors `str(fid)`, areas `str(fid)` of their table. Traffic lights: a NAVSIM log
names each light by the lane connector it controls, so every connector with a non-empty
`traffic_light_stop_line_fids` gets `traffic_light = str(own fid)`; lanes have none.
Geographic (lon/lat) tables are projected to the location's UTM zone, as nuPlan's loader does.

A map file is data from elsewhere: every table, column and cell the reader uses is checked (columns present,
ids ids and unique, geometry cells GeoPackage blobs of the table's kind with finite coordinates within
MAX_ABS_COORDINATE_M, speed limits within 0..MAX_SPEED_LIMIT_MPS, boundaries and centerlines of 2+ points), and
what goes wrong is a MapFormatError naming the file, the table and the fid; a file that is not SQLite, or a
damaged one, is a MapFormatError naming the file.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import shapely

from scenarios.geopackage import GeometryBlobError, decode_geometries
from scenarios.transverse_mercator import ProjectionError, parse_epsg, utm_zone
from sim import limits
from sim.map import Area, Lane, MapError, RoadMap

# nuPlan map release v1.0: location -> map version, and the UTM zone nuPlan projects each city to.
MAP_VERSIONS = {
    "sg-one-north": "9.17.1964",
    "us-ma-boston": "9.12.1817",
    "us-nv-las-vegas-strip": "9.15.1915",
    "us-pa-pittsburgh-hazelwood": "9.17.1937",
}
LOCATION_EPSG = {
    "sg-one-north": 32648,
    "us-ma-boston": 32619,
    "us-nv-las-vegas-strip": 32611,
    "us-pa-pittsburgh-hazelwood": 32617,
}
MAPS_INDEX_FILE = "nuplan-maps-v1.0.json"
# NULL / NaN speed limits become PDM-Closed's fallback target velocity (m/s), what NAVSIM's IDM uses then.
DEFAULT_SPEED_LIMIT = 15.0
# Area tables in RoadMap kinds. lane_groups_polygons rows are the roadblocks of NAVSIM's drivable area.
AREA_TABLES = {
    "lane_groups_polygons": "roadblock",
    "intersections": "intersection",
    "carpark_areas": "carpark",
    "crosswalks": "crosswalk",
    "walkways": "walkway",
    "stop_polygons": "stop_polygon",
}
REQUIRED_TABLES = ("lanes_polygons", "lane_connectors", "gen_lane_connectors_scaled_width_polygons",
                   "baseline_paths", "boundaries", "lane_groups_polygons")
# w0sim's own attributes table for lane -> lane links that nuPlan would express with a lane connector.
LANE_LINKS_TABLE = "w0sim_lane_links"
# Plausibility bounds (sim.limits): map coordinates in metres, after projection, and speed limits.
MAX_ABS_COORDINATE_M = limits.MAX_ABS_COORDINATE_M
MAX_SPEED_LIMIT_MPS = limits.MAX_SPEED_MPS
# shapely type ids a table's geometries may have: centerlines and boundaries are lines, areas polygons.
LINE_TYPES = (1,)  # LineString
POLYGON_TYPES = (3, 6)  # Polygon, MultiPolygon
# Names that become path parts (`<maps root>/<location>/<version>/map.gpkg`): no separators, no "..".
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class MapFormatError(MapError):
    """A nuPlan map file cannot be read: names the file and the table (and fid) at fault."""


def nuplan_map_path(maps_root: str | Path, location: str, version: str | None = None) -> Path:
    """`<maps_root>/<location>/<version>/map.gpkg`; the version defaults to the one listed in
    `<maps_root>/nuplan-maps-v1.0.json`, else to nuPlan's release version of that location. Location and version
    must be plain names (a log names its location: it must not lead out of the maps root)."""
    if not isinstance(location, str) or not PLAIN_NAME.fullmatch(location) or ".." in location:
        raise MapFormatError(f"nuPlan map location {str(location)[:80]!r} is not a location name")
    if version is None:
        index = Path(maps_root) / MAPS_INDEX_FILE
        try:
            listed = json.loads(index.read_text()) if index.is_file() else {}
            entry = listed.get(location, {}) if isinstance(listed, dict) else None
            version = (entry.get("version") if isinstance(entry, dict) else None) or MAP_VERSIONS.get(location)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MapFormatError(f"{index}: not a readable nuPlan maps index ({exc})") from None
        if version is None:
            raise MapFormatError(f"unknown nuPlan map location {location!r}; expected one of {sorted(MAP_VERSIONS)}")
    if not isinstance(version, str) or not PLAIN_NAME.fullmatch(version) or ".." in version:
        raise MapFormatError(f"nuPlan map version {str(version)[:80]!r} of {location!r} is not a version name")
    return Path(maps_root) / location / version / "map.gpkg"


def read_nuplan_map(path: str | Path, location: str | None = None) -> RoadMap:
    """The RoadMap of a nuPlan `map.gpkg` (all of it). `location` (else the meta table, else the path's
    `<location>/<version>/map.gpkg` layout) picks the UTM zone when the file stores lon/lat."""
    return NuplanMapContents.read(path, location).road_map()


class NuplanMapContents:
    """Everything w0sim reads from one map.gpkg, read and checked once: lanes and connectors linked (fid order)
    and areas (fid order across tables). A city map can hold far more than one scene needs: `crop` gives the
    RoadMap of the part near some points."""

    def __init__(self, lanes: list[Lane], areas: list[Area], name: str) -> None:
        self.lanes, self.areas, self.name = lanes, areas, name
        self._trees: tuple[shapely.STRtree, shapely.STRtree] | None = None
        self._group_rows: dict[str, list[int]] = {}

    @classmethod
    def read(cls, path: str | Path, location: str | None = None) -> NuplanMapContents:
        path = Path(path)
        try:
            return cls._read(path, location)
        except MapError:
            raise
        except sqlite3.Error as exc:
            raise MapFormatError(f"{path}: not a readable GeoPackage ({type(exc).__name__}: {exc})") from None
        except (ValueError, TypeError, IndexError, OverflowError, shapely.errors.GEOSException) as exc:
            raise MapFormatError(f"{path}: malformed nuPlan map ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _read(cls, path: Path, location: str | None) -> NuplanMapContents:
        with closing(_open(path)) as db:
            reader = _TableReader(db, path, location)
            boundary_fids, _, boundary_lines = reader.polylines("boundaries", [])
            boundaries = dict(zip(boundary_fids, boundary_lines))
            _, owners, baselines = reader.polylines("baseline_paths", ["lane_fid", "lane_connector_fid"])
            lane_paths = {f: line for f, line in zip(owners["lane_fid"], baselines) if f is not None}
            connector_paths = {f: line for f, line in zip(owners["lane_connector_fid"], baselines) if f is not None}
            lanes = _plain_lanes(reader, lane_paths, boundaries)
            connectors = _connectors(reader, connector_paths, boundaries)
            if clash := sorted(lanes.keys() & connectors.keys()):
                raise MapFormatError(f"{path}: fid {clash[0]} is both a lane and a lane connector")
            lanes.update(connectors)
            edges = _graph_edges(reader, lanes)
            areas = _areas(reader)
            name = reader.location or path.stem
        return cls(_linked_lanes(lanes, edges), areas, name)

    def road_map(self) -> RoadMap:
        """The whole map."""
        return RoadMap(self.lanes, self.areas, name=self.name)

    def crop(self, points: np.ndarray, radius: float, lane_groups: list[str] | tuple[str, ...] = ()) -> RoadMap:
        """The lanes and areas within `radius` of any of the (N, 2) `points`, and every lane of `lane_groups`;
        links to lanes left out are dropped. Lanes and areas keep their order, so the crop of a map holding one
        scene's map, around that scene, is that scene's map."""
        if self._trees is None:
            self._trees = (shapely.STRtree([lane.polygon() for lane in self.lanes]),
                           shapely.STRtree([area.polygon for area in self.areas]))
            for k, lane in enumerate(self.lanes):
                self._group_rows.setdefault(lane.lane_group, []).append(k)
        near = shapely.multipoints(np.asarray(points, dtype=np.float64).reshape(-1, 2))
        lane_rows = set(self._trees[0].query(near, predicate="dwithin", distance=radius).tolist())
        for group in lane_groups:
            lane_rows.update(self._group_rows.get(group, ()))
        kept = [self.lanes[k] for k in sorted(lane_rows)]
        ids = {lane.id for lane in kept}
        lanes = [lane if set(lane.successors + lane.predecessors) <= ids else dataclasses.replace(
            lane, successors=tuple(i for i in lane.successors if i in ids),
            predecessors=tuple(i for i in lane.predecessors if i in ids)) for lane in kept]
        area_rows = np.sort(self._trees[1].query(near, predicate="dwithin", distance=radius))
        return RoadMap(lanes, [self.areas[k] for k in area_rows.tolist()], name=self.name)


def _open(path: Path) -> sqlite3.Connection:
    """A read-only connection, after checking that the file exists and is SQLite."""
    if not path.is_file():
        raise MapFormatError(f"{path}: no such nuPlan map file")
    with path.open("rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            raise MapFormatError(f"{path}: not a GeoPackage (not an SQLite database)")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def fid_str(value: object) -> str | None:
    """A fid cell (INTEGER, REAL or TEXT, possibly NULL / NaN) as the id string NAVSIM uses; ValueError for what is
    no id (an infinite or fractional number, a blob)."""
    if type(value) is int:  # the common case, first: this runs once per cell
        return str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not an integer id")
        return str(int(value))
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__} cell is not an id")
    text = value.strip()
    try:
        number = float(text) if text else None
    except ValueError:
        return text
    if number is None or math.isnan(number):
        return None
    if not number.is_integer():
        raise ValueError(f"{value!r} is not an integer id")
    return str(int(number))


class _TableReader:
    """Reads columns and geometries of one GeoPackage, projecting lon/lat tables to UTM; checks what it reads."""

    def __init__(self, db: sqlite3.Connection, path: Path, location: str | None) -> None:
        self.db, self.path = db, path
        self._columns: dict[str, set[str]] = {}
        tables = {name for (name,) in self._query("sqlite_master", "SELECT name FROM sqlite_master WHERE type IN "
                                                                   "('table', 'view')")}
        self.tables = {t for t in tables if isinstance(t, str)}
        if "gpkg_geometry_columns" not in self.tables:
            raise MapFormatError(f"{path}: not a GeoPackage (no table gpkg_geometry_columns)")
        for table in REQUIRED_TABLES:
            if table not in self.tables:
                raise MapFormatError(f"{path}: missing table {table!r} (required for a nuPlan map)")
        self.geometry_columns = {t: (c, s) for t, c, s in self.rows(
            "gpkg_geometry_columns", ["table_name", "column_name", "srs_id"], order=False)}
        if "gpkg_spatial_ref_sys" not in self.tables:
            raise MapFormatError(f"{path}: not a GeoPackage (no table gpkg_spatial_ref_sys)")
        self.srs = {s: (str(o).upper(), c, str(d)) for s, o, c, d in self.rows(
            "gpkg_spatial_ref_sys", ["srs_id", "organization", "organization_coordsys_id", "definition"], order=False)}
        meta = dict(self.rows("meta", ["key", "value"], order=False)) if "meta" in self.tables else {}
        from_path = path.parent.parent.name if path.parent.parent.name in LOCATION_EPSG else None
        self.location = location or (meta.get("location") if isinstance(meta.get("location"), str) else None) \
            or from_path
        projected = meta.get("projectedCoordSystem", "")
        self.projected_epsg = (parse_epsg(projected) if isinstance(projected, str) else None) \
            or LOCATION_EPSG.get(self.location)

    def _query(self, table: str, statement: str) -> list[tuple]:
        try:
            return self.db.execute(statement).fetchall()
        except sqlite3.Error as exc:
            raise MapFormatError(f"{self.path}: table {table!r}: {type(exc).__name__}: {exc}") from None

    def rows(self, table: str, columns: list[str], order: bool = True) -> list[tuple]:
        """All rows of some columns (ordered by fid unless told otherwise); every column must exist (SQLite would
        read a double-quoted name that is no column as a text constant)."""
        if table not in self._columns:
            self._columns[table] = {row[1] for row in self._query(table, f'PRAGMA table_info("{table}")')}
        if missing := [c for c in [*columns, *(["fid"] if order else [])] if c not in self._columns[table]]:
            raise MapFormatError(f"{self.path}: table {table!r} has no column {missing[0]!r}")
        names = ", ".join(f'"{c}"' for c in columns)
        return self._query(table, f'SELECT {names} FROM "{table}"' + (" ORDER BY fid" if order else ""))

    def columns(self, table: str, columns: list[str]) -> tuple[list[str], dict[str, list]]:
        """(fid strings, {column: values}) of a table; fid-like columns are normalised with fid_str. Every row has
        a fid of its own."""
        rows = self.rows(table, ["fid", *columns])
        values = list(zip(*rows)) if rows else [()] * (len(columns) + 1)
        cols = {}
        for name, vals in zip(["fid", *columns], values):
            if name != "fid" and not name.endswith("_fid"):
                cols[name] = list(vals)
                continue
            try:
                cols[name] = [fid_str(v) for v in vals]
            except ValueError as exc:
                raise MapFormatError(f"{self.path}: table {table!r}, column {name!r}: {exc}") from None
        fids = cols.pop("fid")
        seen: set[str] = set()
        for k, fid in enumerate(fids):
            if fid is None or fid in seen:
                raise MapFormatError(f"{self.path}: table {table!r}, row {k}: fid {rows[k][0]!r} is "
                                     f"{'missing' if fid is None else 'used twice'}")
            seen.add(fid)
        return fids, cols

    def geometries(self, table: str, columns: list[str], kinds: tuple[int, ...] = POLYGON_TYPES
                   ) -> tuple[list[str], dict[str, list], np.ndarray]:
        """(fids, columns, (N,) shapely geometries in metres; None for NULL or empty cells) of a feature table,
        each of one of the shapely type ids `kinds`, with finite coordinates within MAX_ABS_COORDINATE_M."""
        if table not in self.geometry_columns:
            raise MapFormatError(f"{self.path}: table {table!r} is not registered in gpkg_geometry_columns")
        column, srs_id = self.geometry_columns[table]
        if not isinstance(column, str):
            raise MapFormatError(f"{self.path}: gpkg_geometry_columns names column {column!r} of table {table!r}")
        fids, cols = self.columns(table, [*columns, column])
        try:
            geoms = decode_geometries(cols.pop(column))
        except GeometryBlobError as exc:
            raise MapFormatError(f"{self.path}: table {table!r}, fid {fids[exc.index]}: bad geometry: {exc}") from None
        present = np.array([g is not None for g in geoms], dtype=bool)
        geoms[present & shapely.is_empty(geoms)] = None
        present = np.array([g is not None for g in geoms], dtype=bool)
        types = shapely.get_type_id(geoms)
        if (bad := np.flatnonzero(present & ~np.isin(types, kinds))).size:
            raise MapFormatError(f"{self.path}: table {table!r}, fid {fids[bad[0]]}: a {geoms[bad[0]].geom_type}, "
                                 f"expected {' or '.join(shapely.GeometryType(k).name for k in kinds)}")
        if self._geographic(srs_id):
            self._check_coordinates(geoms, fids, table, (180.0, 90.0), "lon/lat")
            geoms = self._to_metres(geoms, table, srs_id)
        self._check_coordinates(geoms, fids, table, (MAX_ABS_COORDINATE_M,) * 2, "m")
        return fids, cols, geoms

    def _check_coordinates(self, geoms: np.ndarray, fids: list[str], table: str, bound: tuple[float, float],
                           unit: str) -> None:
        """Finite coordinates within +-bound (x, y)."""
        coords, index = shapely.get_coordinates(geoms, return_index=True)
        bad = np.flatnonzero(~(np.abs(coords) <= np.array(bound)).all(axis=1))
        if bad.size:
            x, y = coords[bad[0]]
            raise MapFormatError(f"{self.path}: table {table!r}, fid {fids[index[bad[0]]]}: point ({x:.6g}, {y:.6g}) "
                                 f"is not finite or beyond +-{bound[0]:g} / +-{bound[1]:g} ({unit})")

    def polylines(self, table: str, columns: list[str]) -> tuple[list[str], dict[str, list], list[np.ndarray]]:
        """(fids, columns, (K, 2) vertex arrays) of a LINESTRING table."""
        fids, cols, geoms = self.geometries(table, columns, LINE_TYPES)
        coords = shapely.get_coordinates(geoms)
        counts = shapely.get_num_coordinates(geoms)
        return fids, cols, np.split(coords, np.cumsum(counts)[:-1]) if len(geoms) else []

    def _geographic(self, srs_id: int) -> bool:
        organization, code, definition = self.srs.get(srs_id, ("NONE", -1, ""))
        return srs_id == 0 or (organization == "EPSG" and code == 4326) or definition.startswith(
            ("GEOGCS", "GEOGCRS", "GEODCRS"))

    def _to_metres(self, geoms: np.ndarray, table: str, srs_id: int) -> np.ndarray:
        """Geometries as stored when the srs is projected; lon/lat projected to UTM otherwise."""
        if not self._geographic(srs_id):
            return geoms
        if self.projected_epsg is None:
            raise MapFormatError(f"{self.path}: table {table!r} stores lon/lat (srs {srs_id}) and the UTM zone is "
                                 "unknown: pass location=, or add meta projectedCoordSystem")
        try:
            projection = utm_zone(self.projected_epsg)
        except ProjectionError as exc:
            raise MapFormatError(f"{self.path}: {exc}") from None
        with np.errstate(all="ignore"):  # far from the zone the series diverges: the coordinate check names it
            return shapely.transform(geoms, lambda lonlat: np.stack(projection.forward(lonlat[:, 0], lonlat[:, 1]), -1))


def _speed(reader: _TableReader, table: str, fid: str, value: object) -> float:
    """A speed_limit_mps cell: NULL / NaN is DEFAULT_SPEED_LIMIT; otherwise a number within 0..MAX_SPEED_LIMIT_MPS."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DEFAULT_SPEED_LIMIT
    try:
        speed = float(value) if isinstance(value, (int, float, str)) else math.nan
    except ValueError:
        speed = math.nan
    if math.isnan(speed) and isinstance(value, str) and value.strip().lower() in ("", "nan"):
        return DEFAULT_SPEED_LIMIT
    if not 0.0 <= speed <= MAX_SPEED_LIMIT_MPS:
        raise MapFormatError(f"{reader.path}: table {table!r}, fid {fid}: speed_limit_mps {value!r} is not a speed "
                             f"within 0..{MAX_SPEED_LIMIT_MPS:g} m/s")
    return speed


def _oriented(boundary: np.ndarray, centerline: np.ndarray) -> np.ndarray:
    """The boundary in the driving direction: nuPlan boundaries may run against their lane."""
    start, end = centerline[0].tolist(), centerline[-1].tolist()
    first, last = boundary[0].tolist(), boundary[-1].tolist()
    same = math.dist(first, start) + math.dist(last, end)
    flipped = math.dist(last, start) + math.dist(first, end)
    return boundary[::-1] if flipped < same else boundary


def _lane_fields(reader: _TableReader, table: str, fid: str, centerline: np.ndarray | None,
                 left: str | None, right: str | None, boundaries: dict[str, np.ndarray]) -> dict:
    """Centerline and boundaries of one lane or connector, checked against the tables."""
    if centerline is None or len(centerline) < 2:
        raise MapFormatError(f"{reader.path}: table 'baseline_paths' has no centerline for {table} fid {fid}")
    for side in (left, right):
        if side not in boundaries:
            raise MapFormatError(f"{reader.path}: table {table!r}, fid {fid}: boundary {side} is not in table "
                                 "'boundaries'")
        if len(boundaries[side]) < 2:
            raise MapFormatError(f"{reader.path}: table 'boundaries', fid {side}: a boundary needs 2 or more points")
    return dict(id=fid, centerline=centerline, left_boundary=_oriented(boundaries[left], centerline),
                right_boundary=_oriented(boundaries[right], centerline))


def _plain_lanes(reader: _TableReader, paths: dict[str, np.ndarray],
                 boundaries: dict[str, np.ndarray]) -> dict[str, dict]:
    """Lane fields of every lanes_polygons row, by id."""
    fids, cols = reader.columns("lanes_polygons", ["lane_group_fid", "speed_limit_mps", "left_boundary_fid",
                                                   "right_boundary_fid"])
    lanes = {}
    for k, fid in enumerate(fids):
        fields = _lane_fields(reader, "lanes_polygons", fid, paths.get(fid), cols["left_boundary_fid"][k],
                              cols["right_boundary_fid"][k], boundaries)
        lanes[fid] = dict(fields, speed_limit=_speed(reader, "lanes_polygons", fid, cols["speed_limit_mps"][k]),
                          lane_group=cols["lane_group_fid"][k] or "", is_connector=False, traffic_light=None)
    return lanes


def _connectors(reader: _TableReader, paths: dict[str, np.ndarray],
                boundaries: dict[str, np.ndarray]) -> dict[str, dict]:
    """Lane fields of every lane_connectors row (boundaries from its scaled-width polygon row), by id."""
    fids, cols = reader.columns("lane_connectors", ["lane_group_connector_fid", "speed_limit_mps",
                                                    "traffic_light_stop_line_fids"])
    _, poly = reader.columns("gen_lane_connectors_scaled_width_polygons",
                             ["lane_connector_fid", "left_boundary_fid", "right_boundary_fid"])
    sides = dict(zip(poly["lane_connector_fid"], zip(poly["left_boundary_fid"], poly["right_boundary_fid"])))
    connectors = {}
    for k, fid in enumerate(fids):
        if fid not in sides:
            raise MapFormatError(f"{reader.path}: table 'gen_lane_connectors_scaled_width_polygons' has no row for "
                                 f"lane connector {fid}")
        fields = _lane_fields(reader, "lane_connectors", fid, paths.get(fid), *sides[fid], boundaries)
        lit = _non_empty(cols["traffic_light_stop_line_fids"][k])  # "12,34" (text) or one fid
        connectors[fid] = dict(fields, speed_limit=_speed(reader, "lane_connectors", fid, cols["speed_limit_mps"][k]),
                               lane_group=cols["lane_group_connector_fid"][k] or "", is_connector=True,
                               traffic_light=fid if lit else None)
    return connectors


def _non_empty(cell: object) -> bool:
    """Whether a list-of-fids cell names something: not NULL, NaN or blank."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return False
    return bool(str(cell).strip()) and str(cell).strip().lower() != "nan"


def _graph_edges(reader: _TableReader, lanes: dict[str, dict]) -> list[tuple[str, str]]:
    """(from, to) lane id pairs: exit lane -> connector -> entry lane, plus w0sim's direct lane links."""
    fids, cols = reader.columns("lane_connectors", ["exit_lane_fid", "entry_lane_fid"])
    edges = []
    for fid, exit_lane, entry_lane in zip(fids, cols["exit_lane_fid"], cols["entry_lane_fid"]):
        for column, other, edge in (("exit_lane_fid", exit_lane, (exit_lane, fid)),
                                    ("entry_lane_fid", entry_lane, (fid, entry_lane))):
            if other is None:
                continue
            if other not in lanes:
                raise MapFormatError(f"{reader.path}: table 'lane_connectors', fid {fid}: {column} {other} "
                                     "is not a lane")
            edges.append(edge)
    if LANE_LINKS_TABLE in reader.tables:
        fids, cols = reader.columns(LANE_LINKS_TABLE, ["from_lane_fid", "to_lane_fid"])
        for fid, edge in zip(fids, zip(cols["from_lane_fid"], cols["to_lane_fid"])):
            if unknown := [lane for lane in edge if lane not in lanes]:
                raise MapFormatError(f"{reader.path}: table {LANE_LINKS_TABLE!r}, fid {fid}: "
                                     f"unknown lane {unknown[0]}")
            edges.append(edge)
    return edges


def _linked_lanes(lanes: dict[str, dict], edges: list[tuple[str, str]]) -> list[Lane]:
    """Lanes ordered by integer fid, with successors / predecessors ordered by fid."""
    successors: dict[str, set[str]] = {i: set() for i in lanes}
    predecessors: dict[str, set[str]] = {i: set() for i in lanes}
    for a, b in edges:
        successors[a].add(b)
        predecessors[b].add(a)
    return [Lane(**lanes[i], successors=tuple(sorted(successors[i], key=_fid_order)),
                 predecessors=tuple(sorted(predecessors[i], key=_fid_order))) for i in sorted(lanes, key=_fid_order)]


def _areas(reader: _TableReader) -> list[Area]:
    """Areas of every area table present, in fid order across tables (the writer's original order)."""
    found = []
    for table, kind in AREA_TABLES.items():
        if table not in reader.tables:
            continue
        fids, _, geoms = reader.geometries(table, [], POLYGON_TYPES)
        found += [(fid, kind, g) for fid, g in zip(fids, geoms) if g is not None]
    found.sort(key=lambda item: _fid_order(item[0]))
    return [Area(fid, kind, polygon) for fid, kind, polygon in found]


def _fid_order(fid: str) -> tuple[int, str]:
    """Sort key of an id string: integer fids by value (text ones, never written by nuPlan, last)."""
    return (int(fid), "") if fid.lstrip("-").isdigit() else (1 << 62, fid)
