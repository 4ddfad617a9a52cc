"""nuPlan map GeoPackages: blob codec, transverse Mercator, write -> read round trips, file layout and errors."""
from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import struct

import numpy as np
import pytest
import shapely

from scenarios.generator import FAMILIES, generate_scene
from scenarios.generator.roads import MapBuilder, straight
from scenarios.geopackage import GeometryBlobError, decode_geometries, encode_geometries, utm_wkt
from scenarios.nuplan_map import (
    DEFAULT_SPEED_LIMIT,
    LANE_LINKS_TABLE,
    MAP_VERSIONS,
    MapFormatError,
    NuplanMapContents,
    nuplan_map_path,
    read_nuplan_map,
)
from scenarios.nuplan_map_writer import (
    FID_BLOCK,
    NuplanMapFile,
    translated_map,
    write_nuplan_map,
    write_nuplan_maps_index,
)
from scenarios.transverse_mercator import ProjectionError, TransverseMercator, parse_epsg, utm_zone
from sim.map import MapError, RoadMap

GRS80_F = 1.0 / 298.257222101  # PROJ's default ellipsoid, the one its test values use


@pytest.fixture(scope="module")
def maps():
    return {family: generate_scene(family, 3).map for family in FAMILIES}


@pytest.fixture(scope="module")
def junction_file(maps, tmp_path_factory):
    path = tmp_path_factory.mktemp("junction") / "map.gpkg"
    ids = write_nuplan_map(maps["intersection"], path)
    return path, ids


def _copy(path, tmp_path):
    target = tmp_path / "map.gpkg"
    shutil.copy(path, target)
    return target


def _sql(path, statement, *args):
    with sqlite3.connect(path) as db:
        db.execute(statement, args)


# --- GeoPackage geometry blobs -----------------------------------------------------------------


def _blob(geom, envelope_kind, header_little, wkb_little, srs=32611):
    """A GeoPackage blob built by hand from the standard, independent of the encoder."""
    order = "<" if header_little else ">"
    flags = (envelope_kind << 1) | int(header_little)
    minx, miny, maxx, maxy = geom.bounds
    envelope = {0: (), 1: (minx, maxx, miny, maxy), 2: (minx, maxx, miny, maxy, 0, 0),
                3: (minx, maxx, miny, maxy, 0, 0), 4: (minx, maxx, miny, maxy, 0, 0, 0, 0)}[envelope_kind]
    header = b"GP" + bytes([0, flags]) + struct.pack(f"{order}i{len(envelope)}d", srs, *envelope)
    return header + shapely.to_wkb(geom, byte_order=int(wkb_little))


@pytest.mark.parametrize("envelope_kind", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("little", [True, False])
def test_blob_headers_and_byte_orders(envelope_kind, little):
    geoms = [shapely.LineString([(1.5, 2.0), (3.0, -4.25)]), shapely.Polygon([(0, 0), (2, 0), (2, 1)])]
    blobs = [_blob(g, envelope_kind, little, little) for g in geoms] + [None]
    blobs.append(_blob(geoms[0], envelope_kind, not little, little))  # header and WKB may differ in byte order
    decoded = decode_geometries(blobs)
    assert decoded[2] is None
    for got, want in zip(decoded[[0, 1, 3]], geoms + [geoms[0]]):
        assert shapely.equals_exact(got, want, 0.0)


def test_blob_encoder_writes_little_endian_header_with_envelope():
    geom = shapely.LineString([(10.0, -1.0), (12.0, 5.0)])
    blob, empty = encode_geometries(np.array([geom, shapely.Polygon()], dtype=object), 32611)
    assert blob[:4] == b"GP\x00\x03" and struct.unpack("<i4d", blob[4:40]) == (32611, 10.0, 12.0, -1.0, 5.0)
    assert blob[40] == 1  # WKB little-endian too
    assert empty[:4] == b"GP\x00\x11" and len(empty) > 8  # empty flag, no envelope
    decoded = decode_geometries([blob, empty])
    assert shapely.equals_exact(decoded[0], geom, 0.0) and decoded[1] is None


@pytest.mark.parametrize("blob, message", [
    (b"GP\x00", "shorter"),
    (b"XX\x00\x03" + bytes(40), "magic"),
    (b"GP\x01\x01" + bytes(4) + b"\x01", "version"),
    (b"GP\x00\x0f" + bytes(4) + bytes(64), "envelope indicator"),
    (b"GP\x00\x03" + bytes(4) + bytes(32), "no WKB"),
    (b"GP\x00\x01" + bytes(4) + b"\x01\x02\x00\x00\x00\xff", "invalid WKB"),
])
def test_bad_blobs_are_named_by_index(blob, message):
    good = _blob(shapely.Point(1, 2), 1, True, True)
    with pytest.raises(GeometryBlobError, match=message) as info:
        decode_geometries([good, blob])
    assert info.value.index == 1


# --- transverse Mercator -------------------------------------------------------------------------


@pytest.mark.parametrize("projection, lonlat, expected", [
    # PROJ test suite (test/gie/builtins.gie), GRS80, stated to 0.001 mm / 0.1 mm.
    (TransverseMercator(9.0, f=GRS80_F), (12.0, 56.0), (687071.43910944, 6210141.32674801)),
    (TransverseMercator(-3.0, f=GRS80_F), (2.0, 1.0), (1057002.405491298, 110955.141175949)),
    (TransverseMercator(-3.0, f=GRS80_F), (-2.0, -1.0), (611263.812278905, -110547.105696804)),
    (TransverseMercator(0.0, k0=1.0, false_easting=0.0, f=GRS80_F), (2.0, 1.0), (222650.796795778, 110642.229411927)),
])
def test_transverse_mercator_matches_proj_reference_points(projection, lonlat, expected):
    x, y = projection.forward(*lonlat)
    np.testing.assert_allclose([x, y], expected, rtol=0, atol=1e-5)
    lon, lat = projection.inverse(*expected)
    np.testing.assert_allclose([lon, lat], lonlat, rtol=0, atol=1e-10)


def test_utm_zones_of_known_places():
    # New York City Hall, published as 583960 E 4507523 N, zone 18N (rounded to 1 m).
    np.testing.assert_allclose(utm_zone(32618).forward(-74.00597, 40.71435), (583960, 4507523), atol=0.6)
    # The zone's central meridian maps to the false easting; the equator to northing 0 / 10 000 km.
    assert utm_zone(32611).forward(-117.0, 0.0) == pytest.approx((500000.0, 0.0), abs=1e-9)
    assert utm_zone(32719).forward(-69.0, -1e-12)[1] == pytest.approx(10000000.0, abs=1e-3)
    with pytest.raises(ProjectionError):
        utm_zone(4326)
    assert parse_epsg("EPSG:32611") == 32611 and parse_epsg("epsg:4326") == 4326 and parse_epsg("+proj=utm") is None


@pytest.mark.parametrize("epsg, name, central_meridian, false_northing", [
    (32611, "WGS 84 / UTM zone 11N", -117, 0),  # nuPlan's Las Vegas
    (32619, "WGS 84 / UTM zone 19N", -69, 0),  # nuPlan's Boston
    (32756, "WGS 84 / UTM zone 56S", 153, 10000000),  # Sydney
])
def test_utm_wkt_has_the_epsg_registrys_name_and_parameters(epsg, name, central_meridian, false_northing):
    """The values the EPSG registry publishes for these zones (the SRS definition a GeoPackage reader gets)."""
    wkt = utm_wkt(epsg)
    assert wkt.startswith(f'PROJCS["{name}",GEOGCS["WGS 84"') and wkt.endswith(f'AUTHORITY["EPSG","{epsg}"]]')
    assert f'PARAMETER["central_meridian",{central_meridian}]' in wkt and 'PARAMETER["scale_factor",0.9996]' in wkt
    assert f'PARAMETER["false_northing",{false_northing}]' in wkt and 'PARAMETER["false_easting",500000]' in wkt


def test_transverse_mercator_forward_inverse_round_trip():
    rng = np.random.default_rng(0)
    for epsg in (32648, 32619, 32611, 32617, 32755):
        projection = utm_zone(epsg)
        x, y = rng.uniform(1e5, 9e5, 2000), rng.uniform(1e5, 9.9e6, 2000)
        lon, lat = projection.inverse(x, y)
        x2, y2 = projection.forward(lon, lat)
        assert np.abs(x2 - x).max() < 1e-6 and np.abs(y2 - y).max() < 1e-6


# --- write -> read round trips -------------------------------------------------------------------


def _assert_same_map(original, read, ids, atol):
    assert [ids.lane_id(lane.id) for lane in original.lanes] == [lane.id for lane in read.lanes]
    for a, b in zip(original.lanes, read.lanes):
        for name in ("centerline", "left_boundary", "right_boundary"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=0, atol=atol)
        assert b.speed_limit == a.speed_limit and b.is_connector == a.is_connector
        assert b.lane_group == ids.roadblock_id(a.lane_group)
        assert b.successors == tuple(ids.lane_id(s) for s in a.successors)
        assert b.predecessors == tuple(ids.lane_id(p) for p in a.predecessors)
        # Lights are named by the connector they control, as in NAVSIM logs.
        assert b.traffic_light == (b.id if a.traffic_light is not None else None)
        if a.traffic_light is not None:
            assert b.id in ids.light_lane_ids(a.traffic_light)
    assert [(str(ids.areas[(a.kind, a.id)]), a.kind) for a in original.areas] == [(b.id, b.kind) for b in read.areas]
    for a, b in zip(original.areas, read.areas):
        assert shapely.equals_exact(a.polygon, b.polygon, atol)
    if atol == 0.0:
        assert shapely.equals_exact(original.drivable_area.normalize(), read.drivable_area.normalize(), 1e-9)
    else:  # nm-level noise can leave sliver holes in the union: compare outlines and area instead
        assert shapely.hausdorff_distance(original.drivable_area.exterior, read.drivable_area.exterior) <= atol
        assert original.drivable_area.symmetric_difference(read.drivable_area).area < 1e-6
    assert all(shapely.equals_exact(original.lane_polygons, read.lane_polygons, max(atol, 1e-9)))


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_utm_is_exact(maps, family, tmp_path):
    ids = write_nuplan_map(maps[family], tmp_path / "map.gpkg")
    _assert_same_map(maps[family], read_nuplan_map(tmp_path / "map.gpkg"), ids, atol=0.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_through_lon_lat(maps, family, tmp_path):
    ids = write_nuplan_map(maps[family], tmp_path / "map.gpkg", location="sg-one-north", srs="wgs84")
    with sqlite3.connect(tmp_path / "map.gpkg") as db:
        assert set(db.execute("SELECT srs_id FROM gpkg_geometry_columns").fetchall()) == {(4326,)}
        lon, lat = db.execute("SELECT max_x, max_y FROM gpkg_contents WHERE table_name = 'boundaries'").fetchone()
    assert 100 < lon < 106 and abs(lat) < 1  # UTM 48N at the equator: the generator's local frame
    read = read_nuplan_map(tmp_path / "map.gpkg")
    assert read.name == "sg-one-north"
    _assert_same_map(maps[family], read, ids, atol=1e-6)


def test_location_for_lon_lat_comes_from_argument_or_path(maps, tmp_path):
    path = nuplan_map_path(tmp_path, "us-ma-boston")
    assert path == tmp_path / "us-ma-boston" / MAP_VERSIONS["us-ma-boston"] / "map.gpkg"
    write_nuplan_map(maps["curve"], path, location="us-ma-boston", srs="wgs84")
    _sql(path, "DELETE FROM meta")
    ref = read_nuplan_map(path)  # zone 19N from the <location>/<version>/map.gpkg layout
    np.testing.assert_allclose(ref.lanes[0].centerline, maps["curve"].lanes[0].centerline, atol=1e-6)
    elsewhere = _copy(path, tmp_path)
    with pytest.raises(MapFormatError, match="UTM zone is unknown"):
        read_nuplan_map(elsewhere)
    np.testing.assert_allclose(read_nuplan_map(elsewhere, location="us-ma-boston").lanes[0].centerline,
                               ref.lanes[0].centerline, atol=1e-9)


def test_traffic_lights_and_stop_lines(junction_file, maps):
    path, ids = junction_file
    lit = [lane for lane in maps["intersection"].lanes if lane.traffic_light is not None]
    controlled = sorted(f for fids in ids.traffic_lights.values() for f in fids)
    assert lit and controlled == sorted(ids.lanes[lane.id] for lane in lit)
    with sqlite3.connect(path) as db:
        stops = dict(db.execute("SELECT fid, stop_polygon_type_fid FROM stop_polygons"))
        lines = db.execute("SELECT traffic_light_stop_line_fids FROM lane_connectors").fetchall()
    assert all(value and all(stops[int(f)] == 2 for f in value.split(",")) for (value,) in lines)


def test_lit_connector_without_stop_polygon_gets_a_stop_line(maps, tmp_path):
    road_map = maps["t_junction"]
    bare = RoadMap(road_map.lanes, [a for a in road_map.areas if a.kind != "stop_polygon"], name=road_map.name)
    write_nuplan_map(bare, tmp_path / "map.gpkg")
    read = read_nuplan_map(tmp_path / "map.gpkg")
    lit = [lane for lane in read.lanes if lane.traffic_light is not None]
    stops = read.area_layer("stop_polygon")[1]
    assert lit and len(stops) > 0
    assert all(shapely.distance(stops, shapely.Point(lane.centerline[0])).min() < 1e-9 for lane in lit)


def test_written_file_has_nuplan_tables_and_columns(junction_file):
    path, _ = junction_file
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
        columns = {t: {row[1] for row in db.execute(f'PRAGMA table_info("{t}")')}
                   for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        geometry = dict(db.execute("SELECT table_name, geometry_type_name FROM gpkg_geometry_columns"))
        contents = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents"))
        meta = dict(db.execute("SELECT key, value FROM meta"))
        srs = {row[0] for row in db.execute("SELECT srs_id FROM gpkg_spatial_ref_sys")}
    expected = {
        "lanes_polygons": {"fid", "geom", "lane_group_fid", "lane_index", "speed_limit_mps", "left_boundary_fid",
                           "right_boundary_fid", "from_edge_fid", "to_edge_fid"},
        "lane_groups_polygons": {"fid", "geom", "left_boundary_fid", "right_boundary_fid", "from_edge_fid",
                                 "to_edge_fid"},
        "lane_group_connectors": {"fid", "geom", "intersection_fid", "from_lane_group_fid", "to_lane_group_fid"},
        "lane_connectors": {"fid", "geom", "exit_lane_fid", "entry_lane_fid", "lane_group_connector_fid",
                            "intersection_fid", "traffic_light_stop_line_fids", "speed_limit_mps", "turn_type_fid"},
        "gen_lane_connectors_scaled_width_polygons": {"fid", "geom", "lane_connector_fid", "baseline_path_fid",
                                                      "left_boundary_fid", "right_boundary_fid"},
        "baseline_paths": {"fid", "geom", "lane_fid", "lane_connector_fid"},
        "boundaries": {"fid", "geom"},
        "intersections": {"fid", "geom", "intersection_type_fid", "is_mini"},
        "carpark_areas": {"fid", "geom", "heading"},
        "crosswalks": {"fid", "geom"}, "walkways": {"fid", "geom"},
        "stop_polygons": {"fid", "geom", "stop_polygon_type_fid"},
        "traffic_lights": {"fid", "geom"}, "road_segments": {"fid", "geom"}, "generic_drivable_areas": {"fid", "geom"},
        "meta": {"key", "value"},
    }
    for table, names in expected.items():
        assert names <= columns[table], table
        assert contents[table] == ("attributes" if table == "meta" else "features")
    assert {"gpkg_spatial_ref_sys", "gpkg_contents", "gpkg_geometry_columns"} <= set(columns)
    assert geometry["lane_connectors"] == "LINESTRING" and geometry["lanes_polygons"] == "POLYGON"
    assert meta["projectedCoordSystem"] == "EPSG:32611" and {-1, 0, 4326, 32611} <= srs


def test_gdal_reads_the_written_file_as_a_geopackage_with_our_geometry(junction_file, maps):
    """GDAL's GeoPackage driver (through pyogrio; nuplan-devkit reads maps through GDAL too) opens the file, sees
    every layer nuPlan's map API loads in EPSG:32611, and reads each lane's centreline back from baseline_paths,
    independently of our reader."""
    pyogrio = pytest.importorskip("pyogrio", reason="pyogrio (GDAL) is not installed (pip install -e .[test])")
    path, ids = junction_file
    layers = dict(pyogrio.list_layers(path))
    assert layers["lanes_polygons"] == "Polygon" and layers["lane_connectors"] == "LineString"
    assert layers["baseline_paths"] == "LineString" and layers["traffic_lights"] == "Point"
    info = pyogrio.read_info(path, layer="baseline_paths")
    assert info["driver"] == "GPKG" and info["crs"] == "EPSG:32611" and info["geometry_name"] == "geom"
    meta, _, geometry, fields = pyogrio.raw.read(path, layer="baseline_paths")
    column = {name: values for name, values in zip(meta["fields"], fields)}
    lanes = maps["intersection"].lanes
    assert len(geometry) == len(lanes)
    for lane in lanes:
        fid = ids.lanes[lane.id]
        rows = np.flatnonzero((column["lane_fid"] == fid) | (column["lane_connector_fid"] == fid))
        assert len(rows) == 1, lane.id
        np.testing.assert_allclose(shapely.get_coordinates(shapely.from_wkb(geometry[rows[0]])), lane.centerline,
                                   atol=1e-9, err_msg=lane.id)


def test_maps_index_sets_default_versions(tmp_path):
    index = write_nuplan_maps_index(tmp_path, {"us-ma-boston": "1.2.3"})
    assert index.name == "nuplan-maps-v1.0.json"
    assert nuplan_map_path(tmp_path, "us-ma-boston") == tmp_path / "us-ma-boston" / "1.2.3" / "map.gpkg"
    assert nuplan_map_path(tmp_path, "sg-one-north").parent.name == "9.17.1964"
    assert nuplan_map_path(tmp_path, "sg-one-north", "7.0").parent.name == "7.0"
    with pytest.raises(MapFormatError, match="unknown nuPlan map location"):
        nuplan_map_path(tmp_path, "atlantis")


def test_null_speed_limit_and_reversed_boundary(junction_file, maps, tmp_path):
    path = _copy(junction_file[0], tmp_path)
    original = maps["intersection"].lanes[0]
    fid = junction_file[1].lanes[original.id]
    _sql(path, "UPDATE lanes_polygons SET speed_limit_mps = NULL WHERE fid = ?", fid)
    with sqlite3.connect(path) as db:
        boundary_fid, = db.execute("SELECT left_boundary_fid FROM lanes_polygons WHERE fid = ?", (fid,)).fetchone()
        reversed_line = encode_geometries(np.array([shapely.LineString(original.left_boundary[::-1])]), 32611)[0]
        db.execute("UPDATE boundaries SET geom = ? WHERE fid = ?", (reversed_line, boundary_fid))
    lane = read_nuplan_map(path).lane(str(fid))
    assert lane.speed_limit == DEFAULT_SPEED_LIMIT
    np.testing.assert_array_equal(lane.left_boundary, original.left_boundary)


# --- errors --------------------------------------------------------------------------------------


def test_writer_rejects_what_nuplan_cannot_hold(maps, tmp_path):
    road_map = maps["intersection"]
    with pytest.raises(MapError, match="unknown nuPlan location"):
        write_nuplan_map(road_map, tmp_path / "map.gpkg", location="atlantis")
    with pytest.raises(MapError, match="srs must be"):
        write_nuplan_map(road_map, tmp_path / "map.gpkg", srs="mercator")


def test_a_lane_group_of_lanes_and_a_connector_is_refused_as_nuplan_keeps_roadblocks_and_connectors_apart(maps,
                                                                                                          tmp_path):
    road_map = maps["intersection"]
    group = road_map.lanes[0].lane_group
    assert not road_map.lanes[0].is_connector
    connector = next(lane for lane in road_map.lanes if lane.is_connector)
    mixed = [dataclasses.replace(lane, lane_group=group) if lane is connector else lane for lane in road_map.lanes]
    with pytest.raises(MapError) as raised:
        write_nuplan_map(RoadMap(mixed, road_map.areas, name="junction"), tmp_path / "map.gpkg")
    assert str(raised.value) == (f"map 'junction': lane group {group!r} holds lanes and connectors; nuPlan keeps "
                                 "roadblocks and roadblock connectors apart")
    assert not list(tmp_path.iterdir())  # no half-written map left behind


def test_a_refused_map_leaves_the_map_file_it_would_have_replaced_as_it_was(maps, tmp_path):
    path = tmp_path / "map.gpkg"
    write_nuplan_map(maps["straight"], path)
    before = path.read_bytes()
    road_map = maps["intersection"]
    connector = next(lane for lane in road_map.lanes if lane.is_connector)
    mixed = [dataclasses.replace(lane, lane_group=road_map.lanes[0].lane_group) if lane is connector else lane
             for lane in road_map.lanes]
    with pytest.raises(MapError, match="holds lanes and connectors"):
        write_nuplan_map(RoadMap(mixed, road_map.areas, name="junction"), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["map.gpkg"]
    assert len(read_nuplan_map(path).lanes) == len(maps["straight"].lanes)


def test_missing_and_non_sqlite_files(tmp_path):
    with pytest.raises(MapFormatError, match="no such nuPlan map file"):
        read_nuplan_map(tmp_path / "nope.gpkg")
    (tmp_path / "text.gpkg").write_text("not a database")
    with pytest.raises(MapFormatError, match="not an SQLite database"):
        read_nuplan_map(tmp_path / "text.gpkg")
    sqlite3.connect(tmp_path / "plain.sqlite").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(MapFormatError, match="gpkg_geometry_columns"):
        read_nuplan_map(tmp_path / "plain.sqlite")


def test_missing_table_names_file_and_table(junction_file, tmp_path):
    path = _copy(junction_file[0], tmp_path)
    _sql(path, "DROP TABLE lanes_polygons")
    with pytest.raises(MapFormatError, match="missing table 'lanes_polygons'") as info:
        read_nuplan_map(path)
    assert str(path) in str(info.value)


def test_unknown_lane_reference(junction_file, tmp_path):
    path = _copy(junction_file[0], tmp_path)
    fid = min(junction_file[1].traffic_lights["tl_intersection_0_sr"])
    _sql(path, "UPDATE lane_connectors SET entry_lane_fid = 999999 WHERE fid = ?", fid)
    with pytest.raises(MapFormatError, match=f"'lane_connectors', fid {fid}: entry_lane_fid 999999 is not a lane"):
        read_nuplan_map(path)


def test_bad_geometry_names_table_and_fid(junction_file, tmp_path):
    path = _copy(junction_file[0], tmp_path)
    _sql(path, "UPDATE boundaries SET geom = X'47500003' WHERE fid = (SELECT MIN(fid) + 1 FROM boundaries)")
    with sqlite3.connect(path) as db:
        fid, = db.execute("SELECT MIN(fid) + 1 FROM boundaries").fetchone()
    with pytest.raises(MapFormatError, match=f"'boundaries', fid {fid}: bad geometry"):
        read_nuplan_map(path)


# --- city files: many maps in one file, links nuPlan cannot express, crops -------------------------


def test_maps_appended_in_fid_blocks_read_back_side_by_side(maps, tmp_path):
    path = tmp_path / "map.gpkg"
    with NuplanMapFile(path) as city:
        first = city.add(maps["curve"])
        second = city.add(translated_map(maps["merge"], (4096, 0)), fid_base=3 * FID_BLOCK)
        with pytest.raises(MapError, match="already holds a map"):
            city.add(maps["curve"], fid_base=3 * FID_BLOCK)
        with pytest.raises(MapError, match="multiple of"):
            city.add(maps["curve"], fid_base=17)
    assert max(first.lanes.values()) < FID_BLOCK and min(second.lanes.values()) > 3 * FID_BLOCK
    read = read_nuplan_map(path)
    assert len(read.lanes) == len(maps["curve"].lanes) + len(maps["merge"].lanes)
    np.testing.assert_array_equal(read.lane(second.lane_id("ramp")).centerline,
                                  maps["merge"].lane("ramp").centerline + [4096, 0])


def test_links_nuplan_cannot_express_get_the_extra_table_only_when_there_are_some(maps, tmp_path):
    generated = tmp_path / "generated.gpkg"
    write_nuplan_map(maps["merge"], generated)
    with sqlite3.connect(generated) as db:
        assert not db.execute(f"SELECT name FROM sqlite_master WHERE name = '{LANE_LINKS_TABLE}'").fetchall()
        unlit = db.execute("SELECT traffic_light_stop_line_fids FROM lane_connectors").fetchall()
    assert unlit and {value for (value,) in unlit} == {""}  # nuPlan reads a string: "" is no stop line
    builder = MapBuilder("direct")
    builder.add_lane("a", straight(np.zeros(2), 0.0, 50.0), 10.0, "ga")
    builder.add_lane("b", straight(np.array([50.0, 0.0]), 0.0, 50.0), 10.0, "gb")
    builder.link("a", "b")  # lane -> lane, as CARLA towns have
    direct = tmp_path / "direct.gpkg"
    ids = write_nuplan_map(builder.build(), direct)
    with sqlite3.connect(direct) as db:
        assert db.execute(f'SELECT from_lane_fid, to_lane_fid FROM "{LANE_LINKS_TABLE}"').fetchall() == [
            (ids.lanes["a"], ids.lanes["b"])]
    assert read_nuplan_map(direct).lane(ids.lane_id("a")).successors == (ids.lane_id("b"),)


def test_a_crop_holds_what_is_near_the_points_and_the_named_roadblocks(maps, tmp_path):
    path = tmp_path / "map.gpkg"
    with NuplanMapFile(path) as city:
        near = city.add(maps["intersection"])
        far = city.add(translated_map(maps["straight"], (2048, 0)), fid_base=FID_BLOCK)
    contents = NuplanMapContents.read(path)
    whole = contents.crop(np.array([[0.0, 0.0]]), 300.0)
    assert [lane.id for lane in whole.lanes] == [near.lane_id(lane.id) for lane in maps["intersection"].lanes]
    assert len(whole.areas) == len(maps["intersection"].areas)
    small = contents.crop(np.array([[0.0, 0.0]]), 1.0, [far.roadblock_id("road_f")])
    kept = {lane.id for lane in small.lanes}
    assert {far.lane_id(lane.id) for lane in maps["straight"].lanes if lane.lane_group == "road_f"} <= kept
    assert all(set(lane.successors + lane.predecessors) <= kept for lane in small.lanes)  # links cut at the edge
    assert not kept & {far.lane_id(lane.id) for lane in maps["straight"].lanes if lane.lane_group == "road_b"}
    assert len(kept & set(whole.lane_index)) < len(whole.lanes)  # only the junction's middle, 1 m around (0, 0)


# --- malformed files: every problem a MapFormatError naming the file, the table and the fid -----------------------


def _first_fid(path, table):
    with sqlite3.connect(path) as db:
        return db.execute(f'SELECT MIN(fid) FROM "{table}"').fetchone()[0]


def _blob_of(geom):
    return encode_geometries(np.array([geom], dtype=object), 32611)[0]


def _nan_line():
    with np.errstate(invalid="ignore"):
        return shapely.linestrings([[0.0, 0.0], [np.nan, 1.0]])


@pytest.mark.parametrize("edit, message, geometry", [
    # SQLite reads a double-quoted name that is no column as a text constant: a missing column must be noticed
    ("ALTER TABLE lanes_polygons DROP COLUMN speed_limit_mps", "table 'lanes_polygons' has no column 'speed_limit_mps'",
     None),
    ("ALTER TABLE baseline_paths DROP COLUMN lane_fid", "table 'baseline_paths' has no column 'lane_fid'", None),
    ("UPDATE boundaries SET geom = 'LINESTRING (0 0, 1 1)' WHERE fid = {fid}",
     "table 'boundaries', fid {fid}: bad geometry: a str cell, not a geometry blob", None),
    ("UPDATE boundaries SET geom = ? WHERE fid = {fid}", "table 'boundaries', fid {fid}: point \\(nan, 1\\)", _nan_line),
    ("UPDATE boundaries SET geom = ? WHERE fid = {fid}", "table 'boundaries', fid {fid}: point \\(1e\\+300, 1\\)",
     lambda: shapely.LineString([(0, 0), (1e300, 1)])),
    ("UPDATE boundaries SET geom = ? WHERE fid = {fid}", "table 'boundaries', fid {fid}: a Polygon, expected LINESTRING",
     lambda: shapely.box(0, 0, 1, 1)),
    ("UPDATE intersections SET geom = ? WHERE fid = {fid}", "table 'intersections', fid {fid}: a Point, expected POLYGON",
     lambda: shapely.Point(1, 2)),
    ("UPDATE lanes_polygons SET speed_limit_mps = 'fast' WHERE fid = {fid}",
     "table 'lanes_polygons', fid {fid}: speed_limit_mps 'fast' is not a speed", None),
    ("UPDATE lanes_polygons SET speed_limit_mps = -5 WHERE fid = {fid}", "fid {fid}: speed_limit_mps -5.0 is not a speed",
     None),
    ("UPDATE lane_connectors SET speed_limit_mps = 1e9 WHERE fid = {fid}", "fid {fid}: speed_limit_mps 1000000000.0",
     None),
    ("UPDATE lanes_polygons SET lane_group_fid = 1e999 WHERE fid = {fid}",
     "table 'lanes_polygons', column 'lane_group_fid': inf is not an integer id", None),
    ("UPDATE lanes_polygons SET lane_group_fid = '2.5' WHERE fid = {fid}", "column 'lane_group_fid': 2.5 is not an integer id",
     None),
    ("DROP TABLE gpkg_spatial_ref_sys", "no table gpkg_spatial_ref_sys", None),
])
def test_malformed_tables_name_the_file_the_table_and_the_fid(junction_file, tmp_path, edit, message, geometry):
    path = _copy(junction_file[0], tmp_path)
    words = edit.split()
    table = {"UPDATE": words[1], "ALTER": words[2]}.get(words[0])
    fid = _first_fid(path, table) if table else None
    if table == "lane_connectors":
        fid = min(junction_file[1].traffic_lights["tl_intersection_0_sr"])
    _sql(path, edit.format(fid=fid), *([_blob_of(geometry())] if geometry else []))
    with pytest.raises(MapFormatError, match=message.format(fid=fid)) as info:
        read_nuplan_map(path)
    assert str(path) in str(info.value)


def test_damaged_and_foreign_sqlite_files_are_map_format_errors(junction_file, tmp_path):
    data = junction_file[0].read_bytes()
    (tmp_path / "cut.gpkg").write_bytes(data[: len(data) // 3])
    (tmp_path / "noise.gpkg").write_bytes(data[:100] + bytes(range(256)) * 40)
    for name in ("cut.gpkg", "noise.gpkg"):
        with pytest.raises(MapFormatError, match=name):
            read_nuplan_map(tmp_path / name)


def test_a_location_or_version_leading_out_of_the_maps_root_is_refused(tmp_path):
    for location in ("../../etc", "us-nv/../../x", ""):
        with pytest.raises(MapFormatError, match="is not a location name"):
            nuplan_map_path(tmp_path, location)
    (tmp_path / "nuplan-maps-v1.0.json").write_text('{"us-ma-boston": {"version": "../../../tmp"}}')
    with pytest.raises(MapFormatError, match="'../../../tmp' of 'us-ma-boston' is not a version name"):
        nuplan_map_path(tmp_path, "us-ma-boston")
    (tmp_path / "nuplan-maps-v1.0.json").write_text("{not json")
    with pytest.raises(MapFormatError, match="not a readable nuPlan maps index"):
        nuplan_map_path(tmp_path, "us-ma-boston")
    (tmp_path / "nuplan-maps-v1.0.json").write_text('["a list"]')
    assert nuplan_map_path(tmp_path, "us-ma-boston").parent.name == MAP_VERSIONS["us-ma-boston"]
