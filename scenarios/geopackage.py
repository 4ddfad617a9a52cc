"""GeoPackage (OGC 12-128) building blocks on plain sqlite3: geometry blob codec, SRS and metadata tables.

A geometry cell is "GP", version byte, flags byte (bit 0 byte order, bits 1-3 envelope kind, bit 4
empty, bit 5 extended type), int32 srs_id, an optional envelope of 0/4/6/6/8 doubles, then WKB.
"""
from __future__ import annotations

import sqlite3

import numpy as np
import shapely

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10200  # GeoPackage 1.2.0
ENVELOPE_BYTES = np.array([0, 32, 48, 48, 64, -1, -1, -1])  # by envelope indicator (5-7 are invalid)
# Fixed so that the same map always gives the same file contents.
LAST_CHANGE = "2000-01-01T00:00:00.000Z"

WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
    'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],'
    'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],'
    'AUTHORITY["EPSG","4326"]]'
)


class GeometryBlobError(ValueError):
    """A geometry cell is not a valid GeoPackage binary; `index` is its position in the input."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index


def decode_geometries(blobs: list[bytes | None]) -> np.ndarray:
    """(N,) object array of shapely geometries (None for NULL or empty cells) from GeoPackage blobs.

    Headers are checked and stripped with numpy, then all WKB goes through one `shapely.from_wkb`. A cell that is
    not a blob (TEXT, a number), a bad header or bad WKB raises GeometryBlobError with the cell's index.
    """
    geoms = np.full(len(blobs), None, dtype=object)
    present = np.array([b is not None for b in blobs], dtype=bool)
    rows = np.flatnonzero(present)
    if rows.size == 0:
        return geoms
    for i in rows.tolist():
        if not isinstance(blobs[i], (bytes, bytearray, memoryview)):
            raise GeometryBlobError(i, f"a {type(blobs[i]).__name__} cell, not a geometry blob")
    cells = [bytes(blobs[i]) for i in rows]
    lengths = np.array([len(c) for c in cells])
    if (short := np.flatnonzero(lengths < 8)).size:
        raise GeometryBlobError(int(rows[short[0]]), f"{lengths[short[0]]} bytes, shorter than a GeoPackage header")
    head = np.frombuffer(b"".join(c[:4] for c in cells), dtype=np.uint8).reshape(-1, 4)
    bad_magic = (head[:, 0] != ord("G")) | (head[:, 1] != ord("P"))
    if (bad := np.flatnonzero(bad_magic)).size:
        raise GeometryBlobError(int(rows[bad[0]]), "does not start with the GeoPackage magic 'GP'")
    if (bad := np.flatnonzero(head[:, 2] != 0)).size:
        raise GeometryBlobError(int(rows[bad[0]]), f"unsupported GeoPackage binary version {head[bad[0], 2]}")
    flags = head[:, 3]
    if (bad := np.flatnonzero(flags & 0x20)).size:
        raise GeometryBlobError(int(rows[bad[0]]), "extended (non-standard) geometry type")
    envelope = ENVELOPE_BYTES[(flags >> 1) & 0x07]
    if (bad := np.flatnonzero(envelope < 0)).size:
        raise GeometryBlobError(int(rows[bad[0]]), f"invalid envelope indicator {(flags[bad[0]] >> 1) & 7}")
    start = 8 + envelope
    keep = (flags & 0x10) == 0  # the empty bit: those cells stay None
    if (bad := np.flatnonzero(keep & (lengths <= start))).size:
        raise GeometryBlobError(int(rows[bad[0]]), "no WKB after the GeoPackage header")
    wkb = [c[s:] for c, s, k in zip(cells, start.tolist(), keep.tolist()) if k]
    try:
        with np.errstate(invalid="ignore"):  # NaN coordinates parse; the reader refuses them, naming the row
            parsed = shapely.from_wkb(wkb, on_invalid="raise")
    except shapely.errors.GEOSException:
        parsed = _parse_one_by_one(wkb, rows[keep])
    geoms[rows[keep]] = parsed
    return geoms


def _parse_one_by_one(wkb: list[bytes], rows: np.ndarray) -> np.ndarray:
    """Parse cell by cell to name the bad one (only used after a batch parse failed)."""
    parsed = np.empty(len(wkb), dtype=object)
    for k, (data, row) in enumerate(zip(wkb, rows)):
        try:
            with np.errstate(invalid="ignore"):
                parsed[k] = shapely.from_wkb(data, on_invalid="raise")
        except shapely.errors.GEOSException as exc:
            raise GeometryBlobError(int(row), f"invalid WKB: {exc}") from None
    return parsed


def encode_geometries(geoms: np.ndarray, srs_id: int) -> list[bytes]:
    """GeoPackage blobs (little-endian, xy envelope, 2-D WKB) for an (N,) array of shapely geometries."""
    geoms = np.asarray(geoms, dtype=object)
    empty = shapely.is_empty(geoms)
    header = np.zeros(len(geoms), dtype=[("magic", "S2"), ("version", "u1"), ("flags", "u1"), ("srs", "<i4"),
                                         ("envelope", "<f8", (4,))])
    header["magic"] = b"GP"
    header["flags"] = np.where(empty, 0x11, 0x03)  # little-endian; envelope kind 1 (xy) unless empty
    header["srs"] = srs_id
    bounds = shapely.bounds(geoms)
    header["envelope"] = bounds[:, [0, 2, 1, 3]]  # GeoPackage order: minx, maxx, miny, maxy
    raw = header.tobytes()
    size = header.itemsize
    wkb = shapely.to_wkb(geoms, byte_order=1, output_dimension=2)
    return [raw[i * size: i * size + (8 if e else size)] + w for i, (w, e) in enumerate(zip(wkb, empty.tolist()))]


def utm_wkt(epsg: int) -> str:
    """WKT (version 1) of a WGS84 UTM zone, EPSG 326zz / 327zz."""
    zone, south = epsg % 100, epsg >= 32701
    geogcs = WGS84_WKT.replace(',AXIS["Latitude",NORTH],AXIS["Longitude",EAST]', "")
    return (
        f'PROJCS["WGS 84 / UTM zone {zone}{"S" if south else "N"}",{geogcs},PROJECTION["Transverse_Mercator"],'
        f'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",{6 * zone - 183}],'
        f'PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],'
        f'PARAMETER["false_northing",{10000000 if south else 0}],UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
        f'AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","{epsg}"]]'
    )


def create_metadata_tables(db: sqlite3.Connection, srs: list[tuple[int, str, str]]) -> None:
    """GeoPackage pragmas and the three required metadata tables; `srs` = (srs_id, name, wkt) to add."""
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {USER_VERSION}")
    db.executescript(
        """
        CREATE TABLE gpkg_spatial_ref_sys (
            srs_name TEXT NOT NULL, srs_id INTEGER NOT NULL PRIMARY KEY, organization TEXT NOT NULL,
            organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
        CREATE TABLE gpkg_contents (
            table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
            description TEXT DEFAULT '', last_change DATETIME NOT NULL, min_x DOUBLE, min_y DOUBLE,
            max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
            CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
        CREATE TABLE gpkg_geometry_columns (
            table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name TEXT NOT NULL,
            srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
            CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
            CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
            CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
        """
    )
    rows = [
        ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
        ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
        ("WGS 84 geodetic", 4326, "EPSG", 4326, WGS84_WKT, "longitude/latitude coordinates in decimal degrees"),
    ]
    rows += [(name, srs_id, "EPSG", srs_id, wkt, None) for srs_id, name, wkt in srs if srs_id != 4326]
    db.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", rows)


def create_feature_table(db: sqlite3.Connection, table: str, geometry_type: str | None, srs_id: int,
                         columns: list[tuple[str, str]], rows: list[tuple] = (), blobs: list[bytes] | None = None) -> None:
    """A feature table (integer `fid`, `geom`, then `columns` = (name, SQL type)) or, with
    geometry_type None, an attributes table; registered in gpkg_contents / gpkg_geometry_columns.

    `rows` hold fid then the column values; `blobs` the geometry cells in the same order. More rows can
    be added later with `append_features`.
    """
    fields = ["fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL"]
    if geometry_type is not None:
        fields.append(f"geom {geometry_type}")
    fields += [f'"{name}" {kind}' for name, kind in columns]
    db.execute(f'CREATE TABLE "{table}" ({", ".join(fields)})')
    if geometry_type is None:
        db.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, last_change) VALUES (?, ?, ?, ?)",
                   (table, "attributes", table, LAST_CHANGE))
    else:
        db.execute("INSERT INTO gpkg_contents VALUES (?, 'features', ?, '', ?, NULL, NULL, NULL, NULL, ?)",
                   (table, table, LAST_CHANGE, srs_id))
        db.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)", (table, geometry_type, srs_id))
    append_features(db, table, rows, blobs)


def append_features(db: sqlite3.Connection, table: str, rows: list[tuple], blobs: list[bytes] | None = None) -> None:
    """Insert rows (fid then the column values) into a table made by `create_feature_table`, with their
    geometry cells `blobs` for a feature table (None for an attributes table); gpkg_contents' extent grows
    to cover them."""
    if not len(rows):
        return
    if blobs is not None:
        rows = [(row[0], blob, *row[1:]) for row, blob in zip(rows, blobs)]
    width = len(rows[0])
    db.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" * width)})', rows)
    if blobs is None:
        return
    box = _bounds_of_blobs(blobs)
    if box[0] is None:
        return
    old = db.execute("SELECT min_x, min_y, max_x, max_y FROM gpkg_contents WHERE table_name = ?", (table,)).fetchone()
    if old[0] is not None:
        box = (min(old[0], box[0]), min(old[1], box[1]), max(old[2], box[2]), max(old[3], box[3]))
    db.execute("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ? WHERE table_name = ?",
               (*box, table))


def _bounds_of_blobs(blobs: list[bytes]) -> tuple[float | None, ...]:
    """(min_x, min_y, max_x, max_y) over the envelopes of non-empty blobs (None when there are none)."""
    boxes = [np.frombuffer(b[8:40], dtype="<f8") for b in blobs if b[3] & 0x0E]
    if not boxes:
        return (None, None, None, None)
    env = np.stack(boxes)
    return (float(env[:, 0].min()), float(env[:, 2].min()), float(env[:, 1].max()), float(env[:, 3].max()))
