"""Read NAVSIM/OpenScene log pickles, slice them into scenes as NAVSIM's SceneFilter does, and rebuild 10 Hz Scenes.

A log is a pickled list of 2 Hz frame dicts (spec §4.1). `scene_from_frames` turns one window of
frames into a `Scene` the way NAVSIM's metric cache sees it: ego states and object boxes
interpolated between frames (`scenarios.log_frames`), lights and commands held, the route rebuilt
as the lane chain through the frame's roadblocks, the map cropped (`window_map`) from the nuPlan
GeoPackage of the log's location (read once per process).

A pickle can name any class and call it while loading, so a log is read with `LogUnpickler`, which admits only
what OpenScene's and w0sim's log writers put there: containers, numbers, strings, and numpy arrays and scalars of
plain dtypes (numbers, bools, strings), which it rebuilds itself from their bytes; a log naming anything else is
refused with the class it asked for. `check_frames` then checks every frame's keys, types, shapes and that its
values are finite and physically plausible (bounds below), naming the log, the frame and the field.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import io
import math
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

from scenarios.log_frames import FRAME_STRIDE, hold_frames, interpolate_states, interpolate_tracks
from scenarios.nuplan_map import MapFormatError, NuplanMapContents, nuplan_map_path
from sim import limits
from sim.geometry import principal_value
from sim.map import MapError, RoadMap
from sim.scene import Scene
from sim.state import STATE_SIZE, AgentTracks, AgentType, StateIndex, TrafficLightStatus

NUM_HISTORY_FRAMES = 4
NUM_FUTURE_FRAMES = 10
REQUIRED_KEYS = ("token", "timestamp", "log_name", "map_location", "roadblock_ids", "ego2global_translation",
                 "ego2global_rotation", "ego_dynamic_state", "traffic_lights", "driving_command", "anns")
REQUIRED_ANNOTATIONS = ("gt_boxes", "gt_names", "gt_velocity_3d", "track_tokens")
FRAME_SHAPES = {"ego2global_translation": (3,), "ego2global_rotation": (4,), "ego_dynamic_state": (4,),
                "driving_command": (4,)}
# Extra frame key of w0sim-written logs (NAVSIM ignores it): full light states, track ids, command text.
EXTENSION_KEY = "w0sim"
NUPLAN_NAMES = {
    AgentType.VEHICLE: "vehicle", AgentType.PEDESTRIAN: "pedestrian", AgentType.BICYCLE: "bicycle",
    AgentType.TRAFFIC_CONE: "traffic_cone", AgentType.BARRIER: "barrier", AgentType.CZONE_SIGN: "czone_sign",
    AgentType.GENERIC_OBJECT: "generic_object",
}
AGENT_TYPES = {name: code for code, name in NUPLAN_NAMES.items()}
MAP_ALIASES = {"las_vegas": "us-nv-las-vegas-strip"}  # OpenScene's short name, renamed as NAVSIM does
# Plausibility bounds of a log frame: the scene limits (sim.limits), and what a frame alone can say.
MAX_ABS_COORDINATE_M = limits.MAX_ABS_COORDINATE_M  # ego positions (nuPlan's UTM northings reach ~4.5e6 m)
MAX_SPEED_MPS = limits.MAX_SPEED_MPS  # ego and object velocity components
MAX_ABS_ACCELERATION = limits.MAX_ABS_DYNAMICS  # ego accelerations (m/s^2)
MAX_BOX_SIZE_M = limits.MAX_AGENT_SIZE_M  # an object's length, width, height
MAX_ABS_HEADING_RAD = limits.MAX_ABS_HEADING_RAD
MAX_OBJECTS = limits.MAX_TRACKS  # annotated boxes of one frame
MAX_BOX_OFFSET_M = 1e4  # an object's position relative to the ego (a lidar sees ~100 m)
QUATERNION_NORM_TOLERANCE = 1e-2  # |q| of a rotation
MAX_FRAMES = 1_000_000  # of one log (a 2 Hz log of 5 days)
# A scene reads the part of its (city) map within this of the ego's and the objects' positions in its window:
# more than the metric cache's ±100 m map box and than the look-ahead of a planner's route and forecasts.
CROP_RADIUS_M = 300.0


class NavsimLogError(ValueError):
    """A NAVSIM log (or the map it needs) cannot be used: names the file, frame and key at fault."""


# --- reading: a restricted unpickler ----------------------------------------------------------


class _DType:
    """A numpy dtype as a pickle describes it (`numpy.dtype(code, align, copy)`, then its state), resolved only to a
    plain one: numbers, bools, strings and bytes, with a byte order; never objects, records or sub-arrays."""

    def __init__(self, code=None, align=False, copy=True) -> None:
        self.code, self.state = code, None

    def __setstate__(self, state) -> None:
        self.state = state

    def resolve(self) -> np.dtype:
        if not isinstance(self.code, str) or len(self.code) > 16:
            raise pickle.UnpicklingError(f"dtype code {self.code!r} is not a plain dtype code")
        try:
            dtype = np.dtype(self.code)
        except TypeError as exc:
            raise pickle.UnpicklingError(f"dtype {self.code!r}: {exc}") from None
        if dtype.kind not in "biufcSUmM" or dtype.fields is not None or dtype.subdtype is not None:
            raise pickle.UnpicklingError(f"dtype {self.code!r} ({dtype.kind}) is not a plain numeric or string dtype")
        state = self.state
        if state is not None:
            if not isinstance(state, tuple) or len(state) < 8 or any(v is not None for v in state[2:5]):
                raise pickle.UnpicklingError(f"dtype {self.code!r} has a structured or unknown state {state!r:.80}")
            if state[1] in ("<", ">"):
                dtype = dtype.newbyteorder(state[1])
            if state[5] not in (-1, dtype.itemsize):
                raise pickle.UnpicklingError(f"dtype {self.code!r} claims {state[5]} bytes per item")
        return dtype


def _dtype_of(value) -> np.dtype:
    if not isinstance(value, _DType):
        raise pickle.UnpicklingError(f"expected a numpy dtype, got {type(value).__name__}")
    return value.resolve()


def _shape_of(value) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > 32 or not all(type(n) is int and n >= 0 for n in value):
        raise pickle.UnpicklingError(f"array shape {value!r:.80} is not a tuple of sizes")
    return value


def _array(data, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    """An array of `shape` from exactly as many bytes as it needs (copied: it owns its memory)."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"array data is a {type(data).__name__}, not bytes")
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise pickle.UnpicklingError(f"array of shape {shape} and dtype {dtype} needs {math.prod(shape) * dtype.itemsize} "
                                     f"bytes, the log holds {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _frombuffer(data, dtype, shape, order="C") -> np.ndarray:
    """numpy's pickle of an array (protocol 5): its bytes, dtype, shape and order."""
    return _array(data, _dtype_of(dtype), _shape_of(shape), order == "F")


class _NDArray:
    """Stands for `numpy.ndarray` in a pickle: `_reconstruct` takes it as the array type, nothing calls it."""


class _PendingArray:
    """numpy's older pickle of an array (protocols 2-4): `_reconstruct(ndarray, (0,), b'b')`, then its state
    (version, shape, dtype, fortran, bytes); replaced by the array once the log is read."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("array state is not (version, shape, dtype, fortran, data)")
        shape, dtype, fortran, data = state[-4:]
        self.array = _array(data, _dtype_of(dtype), _shape_of(shape), bool(fortran))


def _reconstruct(kind, shape=None, typecode=None) -> _PendingArray:
    if kind is not _NDArray:
        raise pickle.UnpicklingError(f"array type {kind!r:.80} is not numpy.ndarray")
    return _PendingArray()


def _scalar(dtype, data=None):
    """numpy's pickle of a scalar: its dtype and bytes."""
    return _array(data, _dtype_of(dtype), (1,), False)[0]


def _latin1(text, encoding="latin1") -> bytes:
    """`_codecs.encode(text, 'latin1')`: how protocol 2 writes bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is admitted only to turn latin-1 text into bytes")
    return text.encode("latin1")


def _bytearray(data=b"", *args) -> bytearray:
    if not isinstance(data, (bytes, bytearray, str)):
        raise pickle.UnpicklingError("bytearray is admitted only from bytes or text")
    return bytearray(data, *args) if isinstance(data, str) else bytearray(data)


_NUMPY_CORES = ("numpy.core", "numpy._core")  # numpy 1.x and 2.x write these module names
SAFE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "dtype"): _DType,
    ("numpy", "ndarray"): _NDArray,
    **{(f"{core}.multiarray", "_reconstruct"): _reconstruct for core in _NUMPY_CORES},
    **{(f"{core}.multiarray", "scalar"): _scalar for core in _NUMPY_CORES},
    **{(f"{core}.numeric", "_frombuffer"): _frombuffer for core in _NUMPY_CORES},
    ("_codecs", "encode"): _latin1,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
}
SAFE_GLOBALS.update({("__builtin__", name): found for (module, name), found in list(SAFE_GLOBALS.items())
                     if module == "builtins"})  # protocol 2 writes Python 2's module name


class LogUnpickler(pickle.Unpickler):
    """Unpickles a NAVSIM/OpenScene log, admitting only SAFE_GLOBALS (what log pickles hold; numpy's array and
    scalar constructors replaced by ones that build plain arrays from bytes). Anything else a pickle names, such
    as `os.system` in a `__reduce__` payload, is refused before it can be called."""

    def __init__(self, file) -> None:
        super().__init__(file)
        self.pending = False  # whether an array came in numpy's older two-step form (see _PendingArray)

    def find_class(self, module: str, name: str):
        try:
            found = SAFE_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise RefusedClassError(module, name) from None
        if found is _reconstruct:
            self.pending = True
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not part of a log")


class RefusedClassError(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


def _resolve_pending(value, seen: dict[int, object]):
    """`value` with every _PendingArray replaced by its array, in lists and dicts in place, tuples rebuilt."""
    key = id(value)
    if key in seen:
        return seen[key]
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise pickle.UnpicklingError("an array was announced but its data never came")
        seen[key] = value.array
    elif isinstance(value, list):
        seen[key] = value
        value[:] = [_resolve_pending(v, seen) for v in value]
    elif isinstance(value, dict):
        seen[key] = value
        for k in list(value):
            value[k] = _resolve_pending(value[k], seen)
    elif type(value) is tuple:
        seen[key] = value
        seen[key] = tuple(_resolve_pending(v, seen) for v in value)
    else:
        return value
    return seen[key]


def read_log_pickle(data: bytes, source: str) -> object:
    """The object a log pickle holds, through LogUnpickler; NavsimLogError naming `source` otherwise."""
    try:
        unpickler = LogUnpickler(io.BytesIO(data))
        value = unpickler.load()
        if unpickler.pending:
            value = _resolve_pending(value, {})
    except RefusedClassError as exc:
        raise NavsimLogError(f"{source}: refused to unpickle {exc.qualified}: a NAVSIM log holds only lists, dicts, "
                             "numbers, strings and numpy arrays (a pickle naming other classes can run code when "
                             "loaded)") from None
    except Exception as exc:  # noqa: BLE001 - nothing a refused pickle can name runs: any failure is a corrupt log
        raise NavsimLogError(f"{source}: not a readable log pickle (truncated or corrupt: {type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
    return value


# --- reading and checking ---------------------------------------------------------------------


def load_navsim_log(path: str | Path) -> list[dict]:
    """The frames of a log pickle (read with LogUnpickler), checked for the keys, shapes and values a scene needs."""
    path = Path(path)
    if not path.is_file():
        raise NavsimLogError(f"{path}: no such NAVSIM log file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NavsimLogError(f"{path}: cannot read the log ({exc})") from None
    frames = read_log_pickle(data, str(path))
    check_frames(frames, str(path))
    return frames


def _numbers(where: str, key: str, value, shape: tuple | None = None) -> np.ndarray:
    """`value` as a float64 array (of `shape`), all finite; NavsimLogError naming the field otherwise."""
    if isinstance(value, (str, bytes, dict)) or (isinstance(value, np.ndarray) and value.dtype.kind not in "biuf"):
        raise NavsimLogError(f"{where}: {key!r} is not numeric ({type(value).__name__})")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise NavsimLogError(f"{where}: {key!r} is not numeric") from None
    if shape is not None and array.shape != shape:
        raise NavsimLogError(f"{where}: {key!r} has shape {array.shape}, expected {shape}")
    if not np.isfinite(array).all():
        raise NavsimLogError(f"{where}: {key!r} holds non-finite values (NaN or inf)")
    return array


def _bounded(where: str, key: str, values: np.ndarray, bound: float, unit: str) -> None:
    if values.size and np.abs(values).max() > bound:
        raise NavsimLogError(f"{where}: {key!r} holds {values.flat[int(np.argmax(np.abs(values)))]:.6g} {unit}, beyond the "
                             f"bound +-{bound:g} {unit}")


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_frames(frames: object, source: str) -> None:
    """Raise NavsimLogError unless `frames` is a list of frame dicts with the required keys, types and shapes, and
    finite, plausible values (the bounds above); the error names the log, the frame (and token) and the field."""
    if not isinstance(frames, list):
        raise NavsimLogError(f"{source}: a NAVSIM log is a list of frame dicts, got {type(frames).__name__}")
    if len(frames) > MAX_FRAMES:
        raise NavsimLogError(f"{source}: {len(frames)} frames, more than the bound {MAX_FRAMES}")
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise NavsimLogError(f"{source}: frame {index} is a {type(frame).__name__}, not a dict")
        token = frame.get("token", "?")
        where = f"{source}: frame {index} (token {token if isinstance(token, str) else '?'})"
        if missing := [key for key in REQUIRED_KEYS if key not in frame]:
            raise NavsimLogError(f"{where}: missing key {missing[0]!r}")
        _check_frame(frame, where)


def _check_frame(frame: dict, where: str) -> None:
    for key in ("token", "log_name", "map_location"):
        if not isinstance(frame[key], str) or not frame[key]:
            raise NavsimLogError(f"{where}: {key!r} must be a non-empty string, got {type(frame[key]).__name__}")
    if not _is_integer(frame["timestamp"]) or frame["timestamp"] < 0:
        raise NavsimLogError(f"{where}: 'timestamp' must be a non-negative integer (microseconds)")
    roadblocks = frame["roadblock_ids"]
    if not isinstance(roadblocks, (list, tuple)) or not all(isinstance(r, str) or _is_integer(r) for r in roadblocks):
        raise NavsimLogError(f"{where}: 'roadblock_ids' must be a list of roadblock ids")
    for key, shape in FRAME_SHAPES.items():
        if np.shape(frame[key]) != shape:
            raise NavsimLogError(f"{where}: {key!r} has shape {np.shape(frame[key])}, expected {shape}")
    translation = _numbers(where, "ego2global_translation", frame["ego2global_translation"], (3,))
    _bounded(where, "ego2global_translation", translation, MAX_ABS_COORDINATE_M, "m")
    rotation = _numbers(where, "ego2global_rotation", frame["ego2global_rotation"], (4,))
    if abs(float(np.linalg.norm(rotation)) - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise NavsimLogError(f"{where}: 'ego2global_rotation' {rotation.tolist()} is not a unit quaternion "
                             f"(norm {np.linalg.norm(rotation):.6g})")
    dynamic = _numbers(where, "ego_dynamic_state", frame["ego_dynamic_state"], (4,))
    _bounded(where, "ego_dynamic_state (velocity)", dynamic[:2], MAX_SPEED_MPS, "m/s")
    _bounded(where, "ego_dynamic_state (acceleration)", dynamic[2:], MAX_ABS_ACCELERATION, "m/s^2")
    command = _numbers(where, "driving_command", frame["driving_command"], (4,))
    if not (np.isin(command, (0.0, 1.0)).all() and command.sum() == 1.0):
        raise NavsimLogError(f"{where}: 'driving_command' {command.tolist()} is not one-hot (left, straight, right, "
                             "unknown)")
    lights = frame["traffic_lights"]
    if not isinstance(lights, (list, tuple)):
        raise NavsimLogError(f"{where}: 'traffic_lights' must be a list of (lane connector id, is_red)")
    for k, entry in enumerate(lights):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and _is_integer(entry[0])
                and isinstance(entry[1], (bool, np.bool_, int, np.integer)) and int(entry[1]) in (0, 1)):
            raise NavsimLogError(f"{where}: 'traffic_lights' entry {k} is not (lane connector id, is_red): "
                                 f"{str(entry)[:80]}")
    _check_annotations(frame["anns"], where)
    _check_cameras(frame.get("cams", {}), where)
    if EXTENSION_KEY in frame:
        _check_extension(frame[EXTENSION_KEY], len(frame["anns"]["track_tokens"]), where)


def _check_annotations(anns: object, where: str) -> None:
    if not isinstance(anns, dict) or (missing := [k for k in REQUIRED_ANNOTATIONS if k not in anns]):
        raise NavsimLogError(f"{where}: 'anns' lacks {missing[0] if isinstance(anns, dict) else 'a dict'!r}")
    tokens = anns["track_tokens"]
    if not isinstance(tokens, (list, tuple, np.ndarray)) or not all(isinstance(t, (str, np.str_)) for t in tokens):
        raise NavsimLogError(f"{where}: anns 'track_tokens' must be a list of strings")
    count = len(tokens)
    if count > MAX_OBJECTS:
        raise NavsimLogError(f"{where}: {count} annotated objects, more than the bound {MAX_OBJECTS}")
    if len(set(tokens)) != count:
        raise NavsimLogError(f"{where}: anns 'track_tokens' names a track twice")
    for key, width in (("gt_boxes", 7), ("gt_velocity_3d", 3)):
        if np.shape(anns[key]) != (count, width) and not (count == 0 and np.size(anns[key]) == 0):
            raise NavsimLogError(f"{where}: anns {key!r} has shape {np.shape(anns[key])}, expected ({count}, {width})")
    names = anns["gt_names"]
    if not isinstance(names, (list, tuple, np.ndarray)) or len(names) != count:
        raise NavsimLogError(f"{where}: anns 'gt_names' has {len(names) if hasattr(names, '__len__') else 'no'} names "
                             f"for {count} tracks")
    if not all(isinstance(n, (str, np.str_)) for n in names):
        raise NavsimLogError(f"{where}: anns 'gt_names' must be strings")
    if count == 0:
        return
    boxes = _numbers(where, "anns gt_boxes", anns["gt_boxes"], (count, 7))
    _bounded(where, "anns gt_boxes (position)", boxes[:, :3], MAX_BOX_OFFSET_M, "m")
    _bounded(where, "anns gt_boxes (size)", boxes[:, 3:6], MAX_BOX_SIZE_M, "m")
    if (boxes[:, 3:6] < 0).any():
        raise NavsimLogError(f"{where}: anns 'gt_boxes' holds a negative box size")
    _bounded(where, "anns gt_boxes (yaw)", boxes[:, 6], MAX_ABS_HEADING_RAD, "rad")
    velocity = _numbers(where, "anns gt_velocity_3d", anns["gt_velocity_3d"], (count, 3))
    _bounded(where, "anns gt_velocity_3d", velocity, MAX_SPEED_MPS, "m/s")


def _check_cameras(cams: object, where: str) -> None:
    """`cams`: camera name -> entry; a CAM_F0 entry (the one read) has a relative `data_path` inside the blobs folder."""
    if not isinstance(cams, dict):
        raise NavsimLogError(f"{where}: 'cams' must be a dict of cameras, got {type(cams).__name__}")
    if "CAM_F0" not in cams:
        return
    entry = cams["CAM_F0"]
    data_path = entry.get("data_path") if isinstance(entry, dict) else None
    if not isinstance(data_path, str) or Path(data_path).is_absolute() or ".." in Path(data_path).parts:
        raise NavsimLogError(f"{where}: 'cams' CAM_F0 data_path must be a path inside the sensor blobs folder, got "
                             f"{str(data_path)[:80]!r}")


def _check_extension(extension: object, count: int, where: str) -> None:
    """The w0sim key: light states (connector fid, light id, status), track ids (one per box), command text, and the
    scene family of a log w0sim wrote from a generated scene."""
    if not isinstance(extension, dict):
        raise NavsimLogError(f"{where}: {EXTENSION_KEY!r} must be a dict")
    lights = extension.get("traffic_lights", [])
    statuses = {int(s) for s in TrafficLightStatus}
    if not isinstance(lights, (list, tuple)) or not all(
            isinstance(e, (list, tuple)) and len(e) == 3 and _is_integer(e[0])
            and isinstance(e[1], str) and _is_integer(e[2]) and int(e[2]) in statuses for e in lights):
        raise NavsimLogError(f"{where}: {EXTENSION_KEY!r} traffic_lights must be (connector fid, light id, status) "
                             f"entries with a status in {sorted(statuses)}")
    ids = extension.get("track_ids")
    if ids is not None and (not isinstance(ids, (list, tuple)) or len(ids) != count
                            or not all(isinstance(i, str) for i in ids) or len(set(ids)) != count):
        raise NavsimLogError(f"{where}: {EXTENSION_KEY!r} track_ids must name each of the {count} boxes once")
    if not isinstance(extension.get("command_text", ""), str):
        raise NavsimLogError(f"{where}: {EXTENSION_KEY!r} command_text must be a string")
    if not isinstance(extension.get("family", ""), str):
        raise NavsimLogError(f"{where}: {EXTENSION_KEY!r} family must be a string")


def filter_scenes(frames: list[dict], num_history_frames: int = NUM_HISTORY_FRAMES,
                  num_future_frames: int = NUM_FUTURE_FRAMES, frame_interval: int | None = None,
                  tokens: set[str] | list[str] | None = None, max_scenes: int | None = None) -> list[list[dict]]:
    """NAVSIM's SceneFilter on one log: windows of history + future frames starting every `frame_interval`
    (default: a window's length), without short windows, windows whose current frame has no route
    roadblocks, and (given `tokens`) windows whose current frame's token is not listed."""
    num_frames = num_history_frames + num_future_frames
    wanted = None if tokens is None else set(tokens)
    windows = []
    for start in range(0, len(frames), frame_interval or num_frames):
        window = frames[start : start + num_frames]
        if len(window) < num_frames:
            continue
        current = window[num_history_frames - 1]
        if not current["roadblock_ids"] or (wanted is not None and current["token"] not in wanted):
            continue
        windows.append(window)
        if max_scenes is not None and len(windows) >= max_scenes:
            break
    return windows


# --- maps ---------------------------------------------------------------------------------------


def map_file(maps_root: str | Path, location: str) -> Path:
    """The map.gpkg of a location under `maps_root`; NavsimLogError naming both when there is none."""
    location = MAP_ALIASES.get(location, location)
    try:
        path = nuplan_map_path(maps_root, location)
    except MapFormatError as exc:
        raise NavsimLogError(f"no nuPlan map for location {location!r} under maps root {maps_root}: {exc}") from None
    if not path.is_file():
        raise NavsimLogError(f"no nuPlan map for location {location!r} under maps root {maps_root} (expected {path})")
    return path


@lru_cache(maxsize=4)  # a city map is big and all its scenes share it: read each once per process (mtime: if rewritten)
def _read_map(path: str, mtime_ns: int, location: str) -> NuplanMapContents:
    return NuplanMapContents.read(path, location)


def _with_lights(road_map: RoadMap, named: dict[str, str]) -> RoadMap:
    """The map with the named connectors' `traffic_light` set to their w0sim light id (from a w0sim-written log)."""
    lanes = [dataclasses.replace(lane, traffic_light=named[lane.id]) if lane.id in named else lane
             for lane in road_map.lanes]
    return RoadMap(lanes, road_map.areas, name=road_map.name, stop_signs=road_map.stop_signs)


def window_map(contents: NuplanMapContents, window: list[dict], ego: np.ndarray, tracks: AgentTracks,
               num_history_frames: int = NUM_HISTORY_FRAMES) -> RoadMap:
    """The part of a (city) map one window of frames needs: everything within CROP_RADIUS_M of the ego's poses
    and of the objects' boxes in the window, and every lane of the current frame's route roadblocks."""
    points = np.concatenate([ego[:, StateIndex.X : StateIndex.Y + 1],
                             np.stack([tracks.x[tracks.valid], tracks.y[tracks.valid]], axis=-1)])
    roadblocks = [str(r) for r in window[num_history_frames - 1]["roadblock_ids"]]
    return contents.crop(points, CROP_RADIUS_M, roadblocks)


# --- one window -> Scene --------------------------------------------------------------------------


def quaternion_yaw(q) -> float:
    """Yaw of a (w, x, y, z) quaternion (pyquaternion's yaw_pitch_roll[0])."""
    w, x, y, z = (float(v) for v in q)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def frame_ego_states(window: list[dict]) -> np.ndarray:
    """(F, 11) logged ego states: rear-axle pose, body-frame velocity and acceleration, the rest 0."""
    states = np.zeros((len(window), STATE_SIZE))
    for k, frame in enumerate(window):
        states[k, StateIndex.X : StateIndex.Y + 1] = np.asarray(frame["ego2global_translation"], dtype=np.float64)[:2]
        states[k, StateIndex.HEADING] = quaternion_yaw(frame["ego2global_rotation"])
        dynamic = np.asarray(frame["ego_dynamic_state"], dtype=np.float64)
        states[k, StateIndex.VELOCITY_X : StateIndex.ACCELERATION_Y + 1] = dynamic
    return states


def window_tracks(window: list[dict], ego: np.ndarray) -> AgentTracks:
    """10 Hz tracks of every object of the window: global boxes per frame (NAVSIM's conversion), interpolated."""
    columns: dict[str, int] = {}
    rows = []
    for frame in window:
        anns = frame["anns"]
        ids = frame.get(EXTENSION_KEY, {}).get("track_ids") or [str(t) for t in anns["track_tokens"]]
        rows.append([columns.setdefault(i, len(columns)) for i in ids])
    num = len(columns)
    values = {name: np.zeros((len(window), num)) for name in ("x", "y", "heading", "vx", "vy")}
    valid = np.zeros((len(window), num), dtype=bool)
    size, kind = np.zeros((num, 3)), np.zeros(num, dtype=np.int8)
    for k, (frame, cols) in enumerate(zip(window, rows)):
        if not cols:
            continue
        boxes = np.asarray(frame["anns"]["gt_boxes"], dtype=np.float64).reshape(-1, 7)
        velocity = np.asarray(frame["anns"]["gt_velocity_3d"], dtype=np.float64).reshape(-1, 3)
        x, y, h = ego[k, StateIndex.X], ego[k, StateIndex.Y], ego[k, StateIndex.HEADING]
        c, s = np.cos(h), np.sin(h)
        values["x"][k, cols] = c * boxes[:, 0] - s * boxes[:, 1] + x
        values["y"][k, cols] = s * boxes[:, 0] + c * boxes[:, 1] + y
        values["heading"][k, cols] = principal_value(boxes[:, 6] + h)
        values["vx"][k, cols] = c * velocity[:, 0] - s * velocity[:, 1]
        values["vy"][k, cols] = s * velocity[:, 0] + c * velocity[:, 1]
        first = [i for i, col in enumerate(cols) if not valid[:k, col].any()]  # sizes from the first appearance
        size[np.array(cols)[first]] = boxes[first, 3:6]
        kind[np.array(cols)[first]] = [AGENT_TYPES.get(str(frame["anns"]["gt_names"][i]), AGENT_TYPES["generic_object"])
                                       for i in first]
        valid[k, cols] = True
    interpolated, inside = interpolate_tracks(values, valid)
    return AgentTracks(**interpolated, valid=inside, length=size[:, 0], width=size[:, 1], height=size[:, 2],
                       agent_type=kind, track_ids=list(columns))


def window_lights(window: list[dict]) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """(light ids, (F, L) status, connector id -> light id). A w0sim-written log names its lights and their
    full status; otherwise each lit connector is a light, red or green as `is_red` says, unknown when unlisted."""
    if all(EXTENSION_KEY in frame for frame in window):
        entries = [[(str(fid), light, int(status)) for fid, light, status in f[EXTENSION_KEY]["traffic_lights"]]
                   for f in window]
        named = {fid: light for frame in entries for fid, light, _ in frame}
        ids = list(dict.fromkeys(named.values()))
        status = np.full((len(window), len(ids)), TrafficLightStatus.UNKNOWN, dtype=np.int8)
        for k, frame in enumerate(entries):
            for _, light, value in frame:
                status[k, ids.index(light)] = value
        return ids, status, named
    seen = sorted({int(fid) for frame in window for fid, _ in frame["traffic_lights"]})
    ids = [str(fid) for fid in seen]
    status = np.full((len(window), len(ids)), TrafficLightStatus.UNKNOWN, dtype=np.int8)
    for k, frame in enumerate(window):
        for fid, is_red in frame["traffic_lights"]:
            status[k, ids.index(str(int(fid)))] = TrafficLightStatus.RED if is_red else TrafficLightStatus.GREEN
    return ids, status, {}


def _heading_at(line: np.ndarray, end: bool) -> float:
    d = line[-1] - line[-2] if end else line[1] - line[0]
    return float(np.arctan2(d[1], d[0]))


def _straightest(road_map: RoadMap, anchor: str, candidates: list[str], forward: bool) -> str:
    """The candidate that turns least from `anchor` (compared at their far ends: where each leads)."""
    base = _heading_at(road_map.lane(anchor).centerline, end=forward)
    turns = [abs(float(principal_value(_heading_at(road_map.lane(c).centerline, end=forward) - base))) for c in candidates]
    return candidates[int(np.argmin(turns))]


def route_through_roadblocks(road_map: RoadMap, roadblocks: list[str], ego_pose: np.ndarray) -> list[str]:
    """The lane chain through `roadblocks` (in order) that holds the route lane nearest the ego pose (x, y, heading):
    from that lane, successors inside the same or the next roadblock forwards, predecessors backwards."""
    members: dict[str, list[str]] = {}
    for lane in road_map.lanes:
        members.setdefault(lane.lane_group, []).append(lane.id)
    if unknown := [rb for rb in roadblocks if rb not in members]:
        raise NavsimLogError(f"route roadblock {unknown[0]!r} is not in map {road_map.name!r}")
    candidates = [(k, lane) for k, rb in enumerate(roadblocks) for lane in members[rb]]
    point = np.asarray(ego_pose[:2], dtype=np.float64)
    costs = []
    for _, lane_id in candidates:
        line = road_map.lane(lane_id).centerline
        seg = np.diff(line, axis=0)
        t = np.clip(np.einsum("ij,ij->i", point - line[:-1], seg) / np.maximum(np.einsum("ij,ij->i", seg, seg), 1e-12), 0, 1)
        gaps = np.hypot(*(line[:-1] + t[:, None] * seg - point).T)
        i = int(np.argmin(gaps))
        costs.append(gaps[i] + abs(float(principal_value(np.arctan2(seg[i, 1], seg[i, 0]) - ego_pose[2]))))
    index, start = candidates[int(np.argmin(costs))]
    chain = [start]
    for step, neighbours in ((1, "successors"), (-1, "predecessors")):
        k = index
        while True:
            end = chain[-1] if step > 0 else chain[0]
            links = [l for l in getattr(road_map.lane(end), neighbours) if l not in chain]
            same = [l for l in links if road_map.lane(l).lane_group == roadblocks[k]]
            nxt = k + step
            following = [l for l in links if 0 <= nxt < len(roadblocks) and road_map.lane(l).lane_group == roadblocks[nxt]]
            if not same and not following:
                break
            if not same:
                k = nxt
            chosen = _straightest(road_map, end, same or following, forward=step > 0)
            chain.insert(len(chain) if step > 0 else 0, chosen)
    return chain


def scene_from_frames(window: list[dict], maps_root: str | Path, sensor_blobs: str | Path | None = None,
                      num_history_frames: int = NUM_HISTORY_FRAMES) -> Scene:
    """The 10 Hz Scene of one window of log frames (current frame: index `num_history_frames - 1`)."""
    current = window[num_history_frames - 1]
    location = str(current["map_location"])
    ego_frames = frame_ego_states(window)
    light_ids, light_frames, named = window_lights(window)
    tracks = window_tracks(window, ego_frames)
    path = map_file(maps_root, location)
    try:
        contents = _read_map(str(path), path.stat().st_mtime_ns, MAP_ALIASES.get(location, location))
        road_map = window_map(contents, window, ego_frames, tracks, num_history_frames)
        road_map = _with_lights(road_map, named) if named else road_map
        route = route_through_roadblocks(road_map, [str(r) for r in current["roadblock_ids"]],
                                         ego_frames[num_history_frames - 1])
    except (MapError, NavsimLogError) as exc:
        raise NavsimLogError(f"log {current['log_name']}, token {current['token']}: {exc}") from None
    commands = np.array([int(np.argmax(f["driving_command"])) for f in window], dtype=np.int8)
    metadata = {"source": "navsim", "log_name": str(current["log_name"]), "map_location": location,
                "frame_tokens": [str(f["token"]) for f in window], "num_history_frames": num_history_frames,
                "route_roadblocks": [str(r) for r in current["roadblock_ids"]]}
    if current.get(EXTENSION_KEY, {}).get("family"):  # a log w0sim exported: its scenes keep their family
        metadata["family"] = str(current[EXTENSION_KEY]["family"])
    if sensor_blobs is not None:
        images = {str(k * FRAME_STRIDE): str(Path(sensor_blobs) / f["cams"]["CAM_F0"]["data_path"])
                  for k, f in enumerate(window) if "CAM_F0" in f.get("cams", {})}
        metadata["camera_images"] = {step: p for step, p in images.items() if Path(p).is_file()}
    try:
        return Scene(
            token=str(current["token"]), map=road_map, ego_log=interpolate_states(ego_frames),
            agents=tracks, route=route, current_index=(num_history_frames - 1) * FRAME_STRIDE,
            light_ids=light_ids, light_status=hold_frames(light_frames), driving_command=hold_frames(commands),
            command_text=str(current.get(EXTENSION_KEY, {}).get("command_text", "")), metadata=metadata,
        )
    except ValueError as exc:  # the scene's own checks (sim.scene) on what the log and its map hold
        raise NavsimLogError(f"log {current['log_name']}, token {current['token']}: {exc}") from None


@lru_cache(maxsize=2)  # the scenes of one log are usually loaded one after another
def _cached_log(path: str, mtime_ns: int) -> list[dict]:
    return load_navsim_log(path)


def load_log_scene(log_path: str | Path, start: int, maps_root: str | Path, sensor_blobs: str | Path | None = None,
                   num_history_frames: int = NUM_HISTORY_FRAMES, num_future_frames: int = NUM_FUTURE_FRAMES) -> Scene:
    """The scene of the window of a log starting at frame `start`."""
    log_path = Path(log_path)
    if not log_path.is_file():
        raise NavsimLogError(f"{log_path}: no such NAVSIM log file")
    frames = _cached_log(str(log_path), log_path.stat().st_mtime_ns)
    window = frames[start : start + num_history_frames + num_future_frames]
    if len(window) < num_history_frames + num_future_frames:
        raise NavsimLogError(f"{log_path}: no full window of frames at frame {start} ({len(frames)} frames)")
    return scene_from_frames(window, maps_root, sensor_blobs, num_history_frames)


__all__ = ["EXTENSION_KEY", "NUPLAN_NAMES", "NUM_FUTURE_FRAMES", "NUM_HISTORY_FRAMES", "SAFE_GLOBALS", "LogUnpickler",
           "NavsimLogError", "check_frames", "read_log_pickle",
           "filter_scenes", "frame_ego_states", "load_log_scene", "load_navsim_log", "map_file", "quaternion_yaw",
           "route_through_roadblocks", "scene_from_frames", "window_lights", "window_map", "window_tracks"]
