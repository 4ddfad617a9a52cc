"""Fuzz: garbage and mutated nuPlan map GeoPackages (random bytes, flipped or cut bytes of a real file, cells set to
NaN, inf, words, blobs, other geometries; columns dropped, rows deleted) either read as a road map with finite
coordinates or raise MapError naming the file, never another exception."""
from __future__ import annotations

import shutil
import sqlite3
import struct

import numpy as np
import pytest
import shapely
from hypothesis import event, given, settings
from hypothesis import strategies as st

from scenarios.generator import generate_scene
from scenarios.nuplan_map import NuplanMapContents
from scenarios.nuplan_map_writer import write_nuplan_map
from sim.map import MapError

TABLES = ["lanes_polygons", "lane_connectors", "gen_lane_connectors_scaled_width_polygons", "baseline_paths",
          "boundaries", "lane_groups_polygons", "intersections", "crosswalks", "stop_polygons", "gpkg_geometry_columns",
          "gpkg_spatial_ref_sys", "gpkg_contents"]
VALUES = [None, "", "abc", "12,34", "nan", -1, 0, 7, 2**62, 1e300, float("nan"), float("inf"), -3.5, b"", b"GP",
          b"GP\x00\x03" + bytes(40), b"GP\x00\x01" + bytes(36) + b"\x01\x02\x00\x00\x00\xff\xff\xff\x7f"]


def _blob(wkb: bytes) -> bytes:
    return b"GP\x00\x01" + struct.pack("<i", 32611) + wkb


def _geometries():
    with np.errstate(invalid="ignore"):
        return [shapely.linestrings([[0.0, 0.0], [np.nan, 1.0]]), shapely.LineString([(0, 0), (1e300, 1)]),
                shapely.Point(1, 2), shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)]), shapely.LineString(),
                shapely.MultiLineString([[(0, 0), (1, 1)], [(2, 2), (3, 3)]]), shapely.box(0, 0, 1e9, 1e9),
                shapely.LineString([(5, 5), (5, 5)])]


GEOMETRIES = [_blob(shapely.to_wkb(g)) for g in _geometries()]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_maps")
    path = folder / "source.gpkg"
    write_nuplan_map(generate_scene("intersection", 3).map, path)
    return {"folder": folder, "path": path, "bytes": path.read_bytes()}


def reads_or_refuses(path) -> None:
    try:
        contents = NuplanMapContents.read(path, "us-nv-las-vegas-strip")
        road_map = contents.road_map()
        crop = contents.crop(np.zeros((1, 2)), 300.0)
    except MapError as exc:
        assert str(path) in str(exc) or "map " in str(exc)
        event("refused")
        return
    event("read")
    for lane in [*road_map.lanes, *crop.lanes]:
        assert np.isfinite(lane.centerline).all() and np.isfinite(lane.left_boundary).all()
        assert 0.0 <= lane.speed_limit <= 100.0
    assert all(np.isfinite(shapely.get_coordinates(area.polygon)).all() for area in road_map.areas)


@given(st.binary(max_size=4096), st.booleans())
def test_garbage_files_are_refused(source, data, sqlite_header):
    path = source["folder"] / "garbage.gpkg"
    path.write_bytes((b"SQLite format 3\x00" if sqlite_header else b"") + data)
    reads_or_refuses(path)


@settings(max_examples=30)
@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=30),
       st.one_of(st.none(), st.integers(0, 10**9)))
def test_flipped_or_cut_bytes_are_read_or_refused(source, flips, cut):
    data = bytearray(source["bytes"])
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    path = source["folder"] / "flipped.gpkg"
    path.write_bytes(bytes(data))
    reads_or_refuses(path)


@settings(max_examples=40)
@given(st.data())
def test_mutated_tables_are_read_or_refused(source, data):
    path = source["folder"] / "mutated.gpkg"
    shutil.copy(source["path"], path)
    with sqlite3.connect(path) as db:
        for _ in range(data.draw(st.integers(1, 3))):
            table = data.draw(st.sampled_from(TABLES))
            columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]
            operation = data.draw(st.sampled_from(["set", "set", "geometry", "drop", "delete"]))
            if operation == "set":
                statement = (f'UPDATE "{table}" SET "{data.draw(st.sampled_from(columns))}" = ? WHERE rowid IN '
                             f'(SELECT rowid FROM "{table}" LIMIT 1 OFFSET {data.draw(st.integers(0, 5))})')
                arguments = (data.draw(st.sampled_from(VALUES)),)
            elif operation == "geometry" and "geom" in columns:
                statement = f'UPDATE "{table}" SET geom = ? WHERE rowid = (SELECT MIN(rowid) FROM "{table}")'
                arguments = (data.draw(st.sampled_from(GEOMETRIES)),)
            elif operation == "drop":
                statement, arguments = f'ALTER TABLE "{table}" DROP COLUMN "{data.draw(st.sampled_from(columns))}"', ()
            else:
                statement, arguments = f'DELETE FROM "{table}" WHERE rowid IN (SELECT rowid FROM "{table}" LIMIT 2)', ()
            try:
                db.execute(statement, arguments)
            except sqlite3.Error:
                pass  # SQLite refused the mutation itself (a primary key, a constraint): the file stays as it was
    reads_or_refuses(path)
