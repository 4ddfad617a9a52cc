"""Read nuPlan map GeoPackages (`map.gpkg`) into a RoadMap with sqlite3 + shapely (no GDAL), and locate them.

Ids are the fid strings NAVSIM uses: lanes and lane connectors `str(fid)`, lane groups (roadblocks)
and lane-group connectors `str(fid)`, areas `str(fid)` of their table. Traffic lights: a NAVSIM log
names each light by the lane connector it controls, so every connector with a non-empty
`traffic_light_stop_line_fids` gets `traffic_light = str(own fid)`; lanes have none.
Geographic (lon/lat) tables are projected to the location's UTM zone, as nuPlan's loader does.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import shapely

from scenarios.geopackage import GeometryBlobError, decode_geometries
from scenarios.transverse_mercator import ProjectionError, parse_epsg, utm_zone
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


class MapFormatError(MapError):
    """A nuPlan map file cannot be read: names the file and the table (and fid) at fault."""


def nuplan_map_path(maps_root: str | Path, location: str, version: str | None = None) -> Path:
    """`<maps_root>/<location>/<version>/map.gpkg`; the version defaults to the one listed in
    `<maps_root>/nuplan-maps-v1.0.json`, else to nuPlan's release version of that location."""
    if version is None:
        index = Path(maps_root) / MAPS_INDEX_FILE
        listed = json.loads(index.read_text()) if index.is_file() else {}
        version = listed.get(location, {}).get("version") or MAP_VERSIONS.get(location)
        if version is None:
            raise MapFormatError(f"unknown nuPlan map location {location!r}; expected one of {sorted(MAP_VERSIONS)}")
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
    """A fid cell (INTEGER, REAL or TEXT, possibly NULL / NaN) as the id string NAVSIM uses."""
    if type(value) is int:  # the common case, first: this runs once per cell
        return str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        return str(int(value))
    text = str(value).strip()
    try:
        return str(int(float(text))) if text else None
    except ValueError:
        return text


class _TableReader:
    """Reads columns and geometries of one GeoPackage, projecting lon/lat tables to UTM."""

    def __init__(self, db: sqlite3.Connection, path: Path, location: str | None) -> None:
        self.db, self.path = db, path
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        self.tables = tables
        if "gpkg_geometry_columns" not in tables:
            raise MapFormatError(f"{path}: not a GeoPackage (no table gpkg_geometry_columns)")
        for table in REQUIRED_TABLES:
            if table not in tables:
                raise MapFormatError(f"{path}: missing table {table!r} (required for a nuPlan map)")
        self.geometry_columns = {t: (c, s) for t, c, s in db.execute(
            "SELECT table_name, column_name, srs_id FROM gpkg_geometry_columns")}
        self.srs = {s: (str(o).upper(), c, str(d)) for s, o, c, d in db.execute(
            "SELECT srs_id, organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys")}
        meta = dict(self.rows("meta", ["key", "value"], order=False)) if "meta" in tables else {}
        from_path = path.parent.parent.name if path.parent.parent.name in LOCATION_EPSG else None
        self.location = location or meta.get("location") or from_path
        self.projected_epsg = parse_epsg(meta.get("projectedCoordSystem", "")) or LOCATION_EPSG.get(self.location)

    def rows(self, table: str, columns: list[str], order: bool = True) -> list[tuple]:
        """All rows of some columns (ordered by fid unless told otherwise)."""
        names = ", ".join(f'"{c}"' for c in columns)
        try:
            return self.db.execute(f'SELECT {names} FROM "{table}"' + (" ORDER BY fid" if order else "")).fetchall()
        except sqlite3.DatabaseError as exc:
            raise MapFormatError(f"{self.path}: table {table!r}: {exc}") from None

    def columns(self, table: str, columns: list[str]) -> tuple[list[str], dict[str, list]]:
        """(fid strings, {column: values}) of a table; fid-like columns are normalised with fid_str."""
        rows = self.rows(table, ["fid", *columns])
        values = list(zip(*rows)) if rows else [()] * (len(columns) + 1)
        cols = {c: [fid_str(v) if c.endswith("_fid") else v for v in vals] for c, vals in zip(columns, values[1:])}
        return [fid_str(v) for v in values[0]], cols

    def geometries(self, table: str, columns: list[str]) -> tuple[list[str], dict[str, list], np.ndarray]:
        """(fids, columns, (N,) shapely geometries in metres) of a feature table."""
        if table not in self.geometry_columns:
            raise MapFormatError(f"{self.path}: table {table!r} is not registered in gpkg_geometry_columns")
        column, srs_id = self.geometry_columns[table]
        fids, cols = self.columns(table, [*columns, column])
        try:
            geoms = decode_geometries(cols.pop(column))
        except GeometryBlobError as exc:
            raise MapFormatError(f"{self.path}: table {table!r}, fid {fids[exc.index]}: bad geometry: {exc}") from None
        return fids, cols, self._to_metres(geoms, table, srs_id)

    def polylines(self, table: str, columns: list[str]) -> tuple[list[str], dict[str, list], list[np.ndarray]]:
        """(fids, columns, (K, 2) vertex arrays) of a LINESTRING table."""
        fids, cols, geoms = self.geometries(table, columns)
        coords = shapely.get_coordinates(geoms)
        counts = shapely.get_num_coordinates(geoms)
        return fids, cols, np.split(coords, np.cumsum(counts)[:-1]) if len(geoms) else []

    def _to_metres(self, geoms: np.ndarray, table: str, srs_id: int) -> np.ndarray:
        """Geometries as stored when the srs is projected; lon/lat projected to UTM otherwise."""
        organization, code, definition = self.srs.get(srs_id, ("NONE", -1, ""))
        geographic = srs_id == 0 or (organization == "EPSG" and code == 4326) or definition.startswith(
            ("GEOGCS", "GEOGCRS", "GEODCRS"))
        if not geographic:
            return geoms
        if self.projected_epsg is None:
            raise MapFormatError(f"{self.path}: table {table!r} stores lon/lat (srs {srs_id}) and the UTM zone is "
                                 "unknown: pass location=, or add meta projectedCoordSystem")
        try:
            projection = utm_zone(self.projected_epsg)
        except ProjectionError as exc:
            raise MapFormatError(f"{self.path}: {exc}") from None
        return shapely.transform(geoms, lambda lonlat: np.stack(projection.forward(lonlat[:, 0], lonlat[:, 1]), -1))


def _speed(value: object) -> float:
    return DEFAULT_SPEED_LIMIT if value is None or math.isnan(float(value)) else float(value)


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
        lanes[fid] = dict(fields, speed_limit=_speed(cols["speed_limit_mps"][k]),
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
        lit = fid_str(cols["traffic_light_stop_line_fids"][k]) is not None  # "12,34" stays as text: non-empty
        connectors[fid] = dict(fields, speed_limit=_speed(cols["speed_limit_mps"][k]),
                               lane_group=cols["lane_group_connector_fid"][k] or "", is_connector=True,
                               traffic_light=fid if lit else None)
    return connectors


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
        fids, _, geoms = reader.geometries(table, [])
        found += [(fid, kind, g) for fid, g in zip(fids, geoms) if g is not None]
    found.sort(key=lambda item: _fid_order(item[0]))
    return [Area(fid, kind, polygon) for fid, kind, polygon in found]


def _fid_order(fid: str) -> tuple[int, str]:
    """Sort key of an id string: integer fids by value (text ones, never written by nuPlan, last)."""
    return (int(fid), "") if fid.lstrip("-").isdigit() else (1 << 62, fid)
