"""The scene file format: a `sim.scene.Scene` saved to and loaded from one versioned, byte-stable file.

A scene file is a zip of `.npy` arrays (readable with `numpy.load`) plus `header.npy`, a JSON
document stored as bytes. Entries are written in a fixed order with a fixed timestamp, so the same
scene always gives the same bytes (content hashes stay stable) and loads back bit-identical.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import shapely

from sim.map import Area, Lane, RoadMap, StopSign
from sim.scene import STEP_S, Scene
from sim.state import AgentTracks

FORMAT_NAME = "w0sim-scene"
FORMAT_VERSION = 1


class SceneFormatError(ValueError):
    """A scene file cannot be read: names the file and what is wrong with it."""


# --- file format ------------------------------------------------------------------------------


def _polyline_block(lines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(p) for p in lines]).astype(np.int64)
    points = np.concatenate(lines) if lines else np.zeros((0, 2))
    return points.astype(np.float64), offsets


def _split(points: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [points[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def scene_to_arrays(scene: Scene) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON header, arrays) of a scene; the inverse of `scene_from_arrays`."""
    lanes = scene.map.lanes
    arrays: dict[str, np.ndarray] = {}
    for name in ("centerline", "left_boundary", "right_boundary"):
        arrays[f"lane_{name}"], arrays[f"lane_{name}_offsets"] = _polyline_block([getattr(l, name) for l in lanes])
    arrays["lane_speed_limit"] = np.array([l.speed_limit for l in lanes], dtype=np.float64)
    wkb = [shapely.to_wkb(a.polygon) for a in scene.map.areas]
    arrays["area_wkb"] = np.frombuffer(b"".join(wkb), dtype=np.uint8)
    arrays["area_wkb_offsets"] = np.cumsum([0] + [len(b) for b in wkb]).astype(np.int64)
    signs = scene.map.stop_signs
    if signs:  # optional entries: maps without stop signs keep their exact (version 1) bytes
        arrays["stop_sign_position"] = np.array([sign.position for sign in signs], dtype=np.float64).reshape(-1, 2)
        wkb = [shapely.to_wkb(sign.trigger) for sign in signs]
        arrays["stop_sign_trigger_wkb"] = np.frombuffer(b"".join(wkb), dtype=np.uint8)
        arrays["stop_sign_trigger_wkb_offsets"] = np.cumsum([0] + [len(b) for b in wkb]).astype(np.int64)
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
        "map": {
            "name": scene.map.name,
            "lanes": [
                {
                    "id": l.id, "lane_group": l.lane_group, "successors": list(l.successors),
                    "predecessors": list(l.predecessors), "is_connector": l.is_connector,
                    "traffic_light": l.traffic_light,
                }
                for l in lanes
            ],
            "areas": [{"id": a.id, "kind": a.kind} for a in scene.map.areas],
        },
        "track_ids": scene.agents.track_ids,
        "light_ids": scene.light_ids,
    }
    if signs:
        header["map"]["stop_signs"] = [{"id": sign.id, "lane_ids": list(sign.lane_ids)} for sign in signs]
    return header, arrays


def scene_from_arrays(header: dict, arrays: dict[str, np.ndarray]) -> Scene:
    lane_geom = {
        name: _split(arrays[f"lane_{name}"], arrays[f"lane_{name}_offsets"])
        for name in ("centerline", "left_boundary", "right_boundary")
    }
    lanes = [
        Lane(
            id=info["id"], centerline=lane_geom["centerline"][i], left_boundary=lane_geom["left_boundary"][i],
            right_boundary=lane_geom["right_boundary"][i], speed_limit=float(arrays["lane_speed_limit"][i]),
            lane_group=info["lane_group"], successors=tuple(info["successors"]),
            predecessors=tuple(info["predecessors"]), is_connector=info["is_connector"],
            traffic_light=info["traffic_light"],
        )
        for i, info in enumerate(header["map"]["lanes"])
    ]
    wkb, off = arrays["area_wkb"].tobytes(), arrays["area_wkb_offsets"]
    areas = [
        Area(id=info["id"], kind=info["kind"], polygon=shapely.from_wkb(wkb[off[i] : off[i + 1]]))
        for i, info in enumerate(header["map"]["areas"])
    ]
    stop_signs = []
    if header["map"].get("stop_signs"):  # absent from files written before stop signs existed
        wkb, off = arrays["stop_sign_trigger_wkb"].tobytes(), arrays["stop_sign_trigger_wkb_offsets"]
        stop_signs = [
            StopSign(id=info["id"], position=arrays["stop_sign_position"][i],
                     trigger=shapely.from_wkb(wkb[off[i] : off[i + 1]]), lane_ids=tuple(info["lane_ids"]))
            for i, info in enumerate(header["map"]["stop_signs"])
        ]
    agents = AgentTracks(
        **{name: arrays[f"agents_{name}"] for name in AgentTracks.TIME_FIELDS + AgentTracks.TRACK_FIELDS},
        track_ids=list(header["track_ids"]),
    )
    return Scene(
        token=header["token"], map=RoadMap(lanes, areas, name=header["map"]["name"], stop_signs=stop_signs),
        ego_log=arrays["ego_log"], agents=agents, route=list(header["route"]),
        current_index=int(header["current_index"]), light_ids=list(header["light_ids"]),
        light_status=arrays["light_status"], driving_command=arrays["driving_command"],
        command_text=header["command_text"], metadata=header["metadata"], route_points=arrays.get("route_points"),
    )


_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def save_scene(scene: Scene, path: str | Path) -> Path:
    """Write a scene file (byte-for-byte deterministic); returns the path."""
    path = Path(path)
    header, arrays = scene_to_arrays(scene)
    entries = {"header": np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8), **arrays}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def load_scene(path: str | Path) -> Scene:
    """Read a scene file; raises SceneFormatError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise SceneFormatError(f"{path}: no such scene file")
    if not zipfile.is_zipfile(path):
        raise SceneFormatError(f"{path}: not a w0sim scene file (not a zip of .npy arrays; truncated or another format)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise SceneFormatError(f"{path}: not a w0sim scene file ({exc})") from exc
    if "header" not in arrays:
        raise SceneFormatError(f"{path}: no header entry; not a w0sim scene file")
    try:
        header = json.loads(arrays.pop("header").tobytes())
    except json.JSONDecodeError as exc:
        raise SceneFormatError(f"{path}: header is not valid JSON ({exc})") from exc
    if header.get("format") != FORMAT_NAME:
        raise SceneFormatError(f"{path}: format {header.get('format')!r} is not {FORMAT_NAME!r}")
    if header.get("version") != FORMAT_VERSION:
        raise SceneFormatError(f"{path}: scene format version {header.get('version')} (this w0sim reads {FORMAT_VERSION})")
    try:
        return scene_from_arrays(header, arrays)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SceneFormatError(f"{path}: malformed scene ({type(exc).__name__}: {exc})") from exc
