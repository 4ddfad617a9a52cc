"""The scene file format: a `sim.scene.Scene` saved to and loaded from one versioned, byte-stable file.

A scene file is a zip of `.npy` arrays (readable with `numpy.load`) plus `header.npy`, a JSON
document stored as a 0-d string array (`str(numpy.load(path)["header"])` is the JSON text; version 1 files stored
it as UTF-8 bytes, and still load). Entries are written in a fixed order with a fixed timestamp, so the same
scene always gives the same bytes (content hashes stay stable) and loads back bit-identical.
"""
from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import shapely
import shapely.errors

from sim.limits import MAX_SCENE_FILE_BYTES
from sim.map import Area, Lane, RoadMap, StopSign
from sim.scene import STEP_S, Scene
from sim.state import AgentTracks, StateIndex

FORMAT_NAME = "w0sim-scene"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the header as a uint8 array of UTF-8 bytes


class SceneFormatError(ValueError):
    """A scene file cannot be read: names the file and what is wrong with it."""


# --- file format ------------------------------------------------------------------------------


def _polyline_block(lines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(p) for p in lines]).astype(np.int64)
    points = np.concatenate(lines) if lines else np.zeros((0, 2))
    return points.astype(np.float64), offsets


def _split(points: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [points[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def map_to_arrays(road_map: RoadMap) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON header, arrays) of a road map, as a scene file holds it; the inverse of `map_from_arrays`."""
    lanes = road_map.lanes
    arrays: dict[str, np.ndarray] = {}
    for name in ("centerline", "left_boundary", "right_boundary"):
        arrays[f"lane_{name}"], arrays[f"lane_{name}_offsets"] = _polyline_block([getattr(l, name) for l in lanes])
    arrays["lane_speed_limit"] = np.array([l.speed_limit for l in lanes], dtype=np.float64)
    wkb = [shapely.to_wkb(a.polygon) for a in road_map.areas]
    arrays["area_wkb"] = np.frombuffer(b"".join(wkb), dtype=np.uint8)
    arrays["area_wkb_offsets"] = np.cumsum([0] + [len(b) for b in wkb]).astype(np.int64)
    signs = road_map.stop_signs
    if signs:  # optional entries: maps without stop signs keep their exact (version 1) bytes
        arrays["stop_sign_position"] = np.array([sign.position for sign in signs], dtype=np.float64).reshape(-1, 2)
        wkb = [shapely.to_wkb(sign.trigger) for sign in signs]
        arrays["stop_sign_trigger_wkb"] = np.frombuffer(b"".join(wkb), dtype=np.uint8)
        arrays["stop_sign_trigger_wkb_offsets"] = np.cumsum([0] + [len(b) for b in wkb]).astype(np.int64)
    header = {
        "name": road_map.name,
        "lanes": [
            {
                "id": l.id, "lane_group": l.lane_group, "successors": list(l.successors),
                "predecessors": list(l.predecessors), "is_connector": l.is_connector, "traffic_light": l.traffic_light,
            }
            for l in lanes
        ],
        "areas": [{"id": a.id, "kind": a.kind} for a in road_map.areas],
    }
    if signs:
        header["stop_signs"] = [{"id": sign.id, "lane_ids": list(sign.lane_ids)} for sign in signs]
    return header, arrays


def scene_to_arrays(scene: Scene) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON header, arrays) of a scene; the inverse of `scene_from_arrays`."""
    map_header, arrays = map_to_arrays(scene.map)
    arrays["ego_log"] = scene.ego_log
    for name, value in scene.agents.arrays().items():
        arrays[f"agents_{name}"] = value
    arrays["light_status"] = scene.light_status
    arrays["driving_command"] = scene.driving_command
    if scene.route_points is not None:  # optional: scenes without a dense route keep their exact bytes
        arrays["route_points"] = np.asarray(scene.route_points, dtype=np.float64)
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "token": scene.token,
        "current_index": scene.current_index,
        "step_s": STEP_S,
        "route": scene.route,
        "command_text": scene.command_text,
        "metadata": scene.metadata,
        "map": map_header,
        "track_ids": scene.agents.track_ids,
        "light_ids": scene.light_ids,
    }
    return header, arrays


class _Malformed(ValueError):
    """A problem with a scene file's content, without the file name (load_scene adds it)."""


# Arrays of the format: dtype kinds (numpy's 'b', 'i', 'u', 'f') and shapes (None: any size; names: must agree).
_FLOAT, _INT, _BOOL, _BYTES = "f", "iu", "b", "u"
_MAP_ARRAYS = {
    "lane_centerline": (_FLOAT, (None, 2)), "lane_left_boundary": (_FLOAT, (None, 2)),
    "lane_right_boundary": (_FLOAT, (None, 2)), "lane_centerline_offsets": (_INT, ("lanes+1",)),
    "lane_left_boundary_offsets": (_INT, ("lanes+1",)), "lane_right_boundary_offsets": (_INT, ("lanes+1",)),
    "lane_speed_limit": (_FLOAT, ("lanes",)), "area_wkb": (_BYTES, (None,)), "area_wkb_offsets": (_INT, ("areas+1",)),
}
_ARRAYS = {
    **_MAP_ARRAYS,
    "ego_log": (_FLOAT, ("steps", len(StateIndex))),
    **{f"agents_{name}": (_FLOAT, ("steps", "tracks")) for name in ("x", "y", "heading", "vx", "vy")},
    "agents_valid": (_BOOL, ("steps", "tracks")),
    **{f"agents_{name}": (_FLOAT, ("tracks",)) for name in ("length", "width", "height")},
    "agents_agent_type": (_INT, ("tracks",)), "light_status": (_INT, ("steps", "lights")),
    "driving_command": (_INT, ("steps",)),
}
_STOP_SIGN_ARRAYS = {"stop_sign_position": (_FLOAT, ("signs", 2)), "stop_sign_trigger_wkb": (_BYTES, (None,)),
                     "stop_sign_trigger_wkb_offsets": (_INT, ("signs+1",))}
_OPTIONAL_ARRAYS = {"route_points": (_FLOAT, (None, 3))}


def _check_arrays(arrays: dict[str, np.ndarray], schema: dict, sizes: dict[str, int], optional: bool = False) -> None:
    """Dtype kind and shape of every array of `schema`; named sizes must match `sizes` (set on first sight)."""
    for name, (kinds, shape) in schema.items():
        if name not in arrays:
            if optional:
                continue
            raise _Malformed(f"missing array {name!r}")
        value = arrays[name]
        if value.dtype.kind not in kinds or (kinds == _BYTES and value.dtype != np.uint8):
            want = {_FLOAT: "float", _INT: "integer", _BOOL: "bool", _BYTES: "uint8"}[kinds]
            raise _Malformed(f"array {name!r} has dtype {value.dtype}, expected {want}")
        if value.ndim != len(shape):
            raise _Malformed(f"array {name!r} has shape {value.shape}, expected {len(shape)} dimensions")
        for axis, (got, want) in enumerate(zip(value.shape, shape)):
            if isinstance(want, str):
                want = sizes.setdefault(want, got)
            if want is not None and got != want:
                raise _Malformed(f"array {name!r} has shape {value.shape}: axis {axis} should be {want} "
                                 f"(as in the header and the other arrays)")


def _check_offsets(name: str, offsets: np.ndarray, total: int, min_run: int = 1) -> np.ndarray:
    """Offsets into a block of `total` items: from 0 to `total`, each run at least `min_run` long."""
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != total or (np.diff(offsets) < min_run).any():
        raise _Malformed(f"array {name!r} does not split its block of {total} into runs of at least {min_run} "
                         f"(offsets must rise from 0 to {total})")
    return offsets


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_header(header) -> None:
    """Types of every header field scene_from_arrays reads."""
    if not isinstance(header, dict):
        raise _Malformed(f"header must be a JSON object, got a JSON {type(header).__name__}")
    fields = {"token": str, "current_index": int, "step_s": (int, float), "route": list, "command_text": str,
              "metadata": dict, "map": dict, "track_ids": list, "light_ids": list}
    for key, kind in fields.items():
        if key not in header:
            raise _Malformed(f"header has no {key!r}")
        if not isinstance(header[key], kind) or isinstance(header[key], bool):
            raise _Malformed(f"header {key!r} has the wrong type ({type(header[key]).__name__})")
    if header["step_s"] != STEP_S:
        raise _Malformed(f"header step_s {header['step_s']!r} is not {STEP_S} (w0sim logs are 10 Hz)")
    for key in ("route", "track_ids", "light_ids"):
        if not _is_str_list(header[key]):
            raise _Malformed(f"header {key!r} must be a list of strings")
    _check_map_header(header["map"], "map.")


def _check_map_header(road_map, prefix: str = "") -> None:
    """Types of every field of a map header (`map_to_arrays`); `prefix` names where it sits in the header."""
    if not isinstance(road_map, dict):
        raise _Malformed(f"header {prefix.rstrip('.') or 'of the map'} must be a JSON object")
    if not isinstance(road_map.get("name"), str):
        raise _Malformed(f"header {prefix}name must be a string")
    if not isinstance(road_map.get("lanes"), list) or not isinstance(road_map.get("areas"), list):
        raise _Malformed(f"header {prefix}lanes and {prefix}areas must be lists")
    if not isinstance(road_map.get("stop_signs", []), list):
        raise _Malformed(f"header {prefix}stop_signs must be a list")
    lane_fields = {"id": str, "lane_group": str, "successors": list, "predecessors": list, "is_connector": bool,
                   "traffic_light": (str, type(None))}
    for what, items, item_fields in ((f"{prefix}lanes", road_map["lanes"], lane_fields),
                                     (f"{prefix}areas", road_map["areas"], {"id": str, "kind": str}),
                                     (f"{prefix}stop_signs", road_map.get("stop_signs", []), {"id": str, "lane_ids": list})):
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise _Malformed(f"header {what}[{i}] must be an object")
            for key, kind in item_fields.items():
                if not isinstance(item.get(key), kind) or (kind is list and not _is_str_list(item[key])):
                    raise _Malformed(f"header {what}[{i}].{key} is missing or has the wrong type")


def _geometries(name: str, wkb: np.ndarray, offsets: np.ndarray, ids: list[str]) -> list:
    """Shapely geometries of one WKB block, each checked to parse."""
    data = wkb.tobytes()
    offsets = _check_offsets(f"{name}_offsets", offsets, len(data))
    out = []
    for i, item_id in enumerate(ids):
        try:
            out.append(shapely.from_wkb(data[offsets[i] : offsets[i + 1]]))
        except shapely.errors.GEOSException as exc:
            raise _Malformed(f"{name} of {item_id!r} is not valid WKB ({exc or 'GEOS gave no reason'})") from None
    return out


def map_from_arrays(header: dict, arrays: dict[str, np.ndarray]) -> RoadMap:
    """The RoadMap of a map header and its arrays (the inverse of `map_to_arrays`); checks their layout and raises
    ValueError naming the field (the RoadMap checks the values)."""
    _check_map_header(header)
    sizes = {"lanes": len(header["lanes"]), "lanes+1": len(header["lanes"]) + 1, "areas+1": len(header["areas"]) + 1}
    _check_arrays(arrays, _MAP_ARRAYS, sizes)
    signs_info = header.get("stop_signs", [])
    if signs_info:  # absent from files written before stop signs existed
        sizes.update({"signs": len(signs_info), "signs+1": len(signs_info) + 1})
        _check_arrays(arrays, _STOP_SIGN_ARRAYS, sizes)
    lane_geom = {}
    for name in ("centerline", "left_boundary", "right_boundary"):
        points = arrays[f"lane_{name}"].astype(np.float64)
        offsets = _check_offsets(f"lane_{name}_offsets", arrays[f"lane_{name}_offsets"], len(points), min_run=2)
        lane_geom[name] = _split(points, offsets)
    speed_limits = arrays["lane_speed_limit"].astype(np.float64)
    lanes = [
        Lane(
            id=info["id"], centerline=lane_geom["centerline"][i], left_boundary=lane_geom["left_boundary"][i],
            right_boundary=lane_geom["right_boundary"][i], speed_limit=float(speed_limits[i]),
            lane_group=info["lane_group"], successors=tuple(info["successors"]),
            predecessors=tuple(info["predecessors"]), is_connector=info["is_connector"],
            traffic_light=info["traffic_light"],
        )
        for i, info in enumerate(header["lanes"])
    ]
    area_info = header["areas"]
    polygons = _geometries("area_wkb", arrays["area_wkb"], arrays["area_wkb_offsets"], [a["id"] for a in area_info])
    areas = [Area(id=info["id"], kind=info["kind"], polygon=polygon) for info, polygon in zip(area_info, polygons)]
    stop_signs = []
    if signs_info:
        triggers = _geometries("stop_sign_trigger_wkb", arrays["stop_sign_trigger_wkb"],
                               arrays["stop_sign_trigger_wkb_offsets"], [s["id"] for s in signs_info])
        positions = arrays["stop_sign_position"].astype(np.float64)
        stop_signs = [StopSign(id=info["id"], position=positions[i], trigger=triggers[i], lane_ids=tuple(info["lane_ids"]))
                      for i, info in enumerate(signs_info)]
    return RoadMap(lanes, areas, name=header["name"], stop_signs=stop_signs)


def scene_from_arrays(header: dict, arrays: dict[str, np.ndarray]) -> Scene:
    """The Scene of a header and its arrays (the inverse of `scene_to_arrays`).

    Checks the layout (header field types, array dtypes and shapes, offsets, WKB) and raises ValueError naming the
    field; the Scene's own validation (`sim.scene.validate_scene`) then checks the values against `sim.limits`.
    """
    _check_header(header)
    sizes = {"tracks": len(header["track_ids"]), "lights": len(header["light_ids"])}
    _check_arrays(arrays, _ARRAYS, {**sizes, "lanes": len(header["map"]["lanes"]),
                                    "lanes+1": len(header["map"]["lanes"]) + 1, "areas+1": len(header["map"]["areas"]) + 1})
    _check_arrays(arrays, _OPTIONAL_ARRAYS, sizes, optional=True)
    road_map = map_from_arrays(header["map"], arrays)
    as_float = lambda a: a.astype(np.float64, copy=False) if a.dtype.kind == "f" else a  # noqa: E731
    agents = AgentTracks(
        **{name: as_float(arrays[f"agents_{name}"]) for name in AgentTracks.TIME_FIELDS + AgentTracks.TRACK_FIELDS},
        track_ids=list(header["track_ids"]),
    )
    route_points = arrays.get("route_points")
    return Scene(
        token=header["token"], map=road_map,
        ego_log=as_float(arrays["ego_log"]), agents=agents, route=list(header["route"]),
        current_index=int(header["current_index"]), light_ids=list(header["light_ids"]),
        light_status=arrays["light_status"], driving_command=arrays["driving_command"],
        command_text=header["command_text"], metadata=header["metadata"],
        route_points=None if route_points is None else route_points.astype(np.float64),
    )


_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def save_scene(scene: Scene, path: str | Path) -> Path:
    """Write a scene file (byte-for-byte deterministic); returns the path."""
    path = Path(path)
    header, arrays = scene_to_arrays(scene)
    entries = {"header": np.array(json.dumps(header, sort_keys=True)), **arrays}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value, order="C"), allow_pickle=False)  # 0-d stays 0-d
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def _read_entries(path: Path) -> dict[str, np.ndarray]:
    """Every .npy entry of a scene file (zip), within the size bound; SceneFormatError for anything unreadable."""
    if not zipfile.is_zipfile(path):
        raise SceneFormatError(f"{path}: not a w0sim scene file (not a zip of .npy arrays; truncated or another format)")
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(info.file_size for info in archive.infolist())
        if size > MAX_SCENE_FILE_BYTES:
            raise SceneFormatError(f"{path}: its arrays hold {size} bytes uncompressed, beyond the bound "
                                   f"{MAX_SCENE_FILE_BYTES} bytes")
        with np.load(path, allow_pickle=False) as data:
            entries = {name: data[name] for name in data.files}
        for name, value in entries.items():
            if not isinstance(value, np.ndarray):  # NpzFile returns the raw bytes of a member that is not .npy
                raise SceneFormatError(f"{path}: entry {name!r} is not a .npy array")
        return entries
    except SceneFormatError:
        raise
    # A damaged zip or .npy fails in many ways (bad CRC, bad deflate stream, unsupported compression or
    # encryption, a header promising more bytes than there are): each means the file cannot be read.
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError, NotImplementedError,
            RuntimeError, MemoryError) as exc:
        raise SceneFormatError(f"{path}: not a w0sim scene file ({type(exc).__name__}: {exc})") from None


def load_scene(path: str | Path) -> Scene:
    """Read a scene file; raises SceneFormatError naming the file and the problem.

    Every malformed file gives a SceneFormatError: a damaged container, a header of the wrong layout, arrays of the
    wrong dtype or shape, geometry that does not parse, and values outside the plausibility limits of `sim.limits`
    (checked by the Scene itself, as for scenes built in code).
    """
    path = Path(path)
    if not path.is_file():
        raise SceneFormatError(f"{path}: no such scene file")
    arrays = _read_entries(path)
    if "header" not in arrays:
        raise SceneFormatError(f"{path}: no header entry; not a w0sim scene file")
    raw = arrays.pop("header")
    if raw.dtype.kind == "U" and raw.ndim == 0:
        text = str(raw)
    elif raw.dtype == np.uint8 and raw.ndim == 1:  # version 1
        text = raw.tobytes()
    else:
        raise SceneFormatError(f"{path}: header entry is neither a JSON string nor JSON bytes "
                               f"(dtype {raw.dtype}, shape {raw.shape})")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SceneFormatError(f"{path}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SceneFormatError(f"{path}: header must be a JSON object, got a JSON {type(header).__name__}")
    if header.get("format") != FORMAT_NAME:
        raise SceneFormatError(f"{path}: format {header.get('format')!r} is not {FORMAT_NAME!r}")
    if header.get("version") not in READABLE_VERSIONS:
        raise SceneFormatError(f"{path}: scene format version {header.get('version')} (this w0sim reads versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))})")
    try:
        return scene_from_arrays(header, arrays)
    except _Malformed as exc:
        raise SceneFormatError(f"{path}: malformed scene ({exc})") from None
    except ValueError as exc:  # MapError, SceneValidationError, AgentTracks' shape checks
        raise SceneFormatError(f"{path}: malformed scene ({type(exc).__name__}: {exc})") from None
