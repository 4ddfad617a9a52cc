"""Fuzz: mutated scene files (bytes, header, arrays: NaN, inf, huge, negative, wrong shapes and dtypes) either load as a
valid scene or raise SceneFormatError, never another exception; a scene that loads scores to finite values in [0, 1]
and drives in `scenes check`."""
from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.generator import generate_scene
from scenarios.scene import SceneFormatError, load_scene, save_scene
from sim.scene import Scene
from tests.scenarios.scene_mutation import read_entries, write_entries
from w0sim.scene_check import check_scene
from w0sim.score import ScoreInputError, TrajectorySpec, score_trajectories

STRAIGHT = [[4.0 * i, 0.0, 0.0] for i in range(1, 9)]
FLOATS = [math.nan, math.inf, -math.inf, 1e300, -1e300, 1e9, -1e9, 2e7, 5e4, 150.0, -1.0, 0.0, 0.5, 3.0, 1e-300]
INTS = [-(2**63), -1, 0, 1, 3, 4, 7, 9, 127, 2**31, 2**62]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_scenes")
    path = save_scene(generate_scene("intersection", 1), folder / "source.npz")
    header, arrays = read_entries(path)
    return {"folder": folder, "path": path, "bytes": path.read_bytes(), "header": header, "arrays": arrays}


def loads_or_refuses(path) -> Scene | None:
    """The scene, or None for a SceneFormatError naming the file; any other exception fails the test."""
    try:
        scene = load_scene(path)
    except SceneFormatError as exc:
        assert str(path) in str(exc)
        return None
    assert isinstance(scene, Scene)
    return scene


def assert_usable(path) -> None:
    """A loaded scene scores to finite values in [0, 1] (or a failed row with a reason) and drives."""
    try:
        rows = score_trajectories(path, [TrajectorySpec("straight", STRAIGHT)]).rows
    except ScoreInputError as exc:
        pytest.fail(f"a scene that loads cannot be scored: {exc}")
    row = rows[0]
    if row["valid"]:
        assert math.isfinite(row["score"]) and 0.0 <= row["score"] <= 1.0, row
    else:
        assert row["reason"], row
    check = check_scene(path, max_decisions=2)
    assert check.ok, check.reason


def mutate_array(value: np.ndarray, kind: str, data) -> np.ndarray | None:
    """One mutation of an array: a value, the shape, the dtype, or removal (None)."""
    value = value.copy()
    if kind == "value" and value.size:
        index = tuple(data.draw(st.integers(0, n - 1)) for n in value.shape)
        if value.dtype.kind == "f":
            value[index] = data.draw(st.sampled_from(FLOATS))
        elif value.dtype.kind in "iu":
            new = data.draw(st.sampled_from(INTS))
            info = np.iinfo(value.dtype)
            value[index] = min(max(new, info.min), info.max)
        elif value.dtype.kind == "b":
            value[index] = not value[index]
        return value
    if kind == "column" and value.dtype.kind == "f" and value.ndim == 2:
        column = data.draw(st.integers(0, value.shape[1] - 1))
        value[:, column] = data.draw(st.sampled_from(FLOATS))
        return value
    if kind == "shape":
        change = data.draw(st.sampled_from(["drop", "flat", "axis", "empty", "transpose"]))
        if change == "drop" and len(value):
            return value[:-1]
        if change == "flat":
            return value.reshape(-1)
        if change == "axis":
            return value[..., None]
        if change == "empty":
            return value[:0]
        return value.T
    if kind == "dtype":
        target = data.draw(st.sampled_from([np.float32, np.int64, np.int8, np.uint8, bool, str, complex]))
        with np.errstate(all="ignore"):
            return value.astype(target)
    if kind == "remove":
        return None
    return value


@settings(max_examples=80)
@given(data=st.data())
def test_mutated_arrays_load_or_are_refused(source, data):
    arrays = dict(source["arrays"])
    for _ in range(data.draw(st.integers(1, 2))):
        name = data.draw(st.sampled_from(sorted(arrays)))
        kind = data.draw(st.sampled_from(["value", "value", "value", "column", "shape", "dtype", "remove"]))
        mutated = mutate_array(arrays[name], kind, data)
        if mutated is None:
            arrays.pop(name)
        else:
            arrays[name] = mutated
    path = write_entries(source["folder"] / "arrays.npz", source["header"], arrays)
    if loads_or_refuses(path) is not None:
        assert_usable(path)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                        max_size=3), max_leaves=6)
HEADER_KEYS = ["token", "current_index", "step_s", "route", "command_text", "metadata", "map", "track_ids",
               "light_ids", "format", "version"]


@settings(max_examples=60)
@given(data=st.data())
def test_mutated_headers_load_or_are_refused(source, data):
    header = json.loads(json.dumps(source["header"]))
    raw = None
    choice = data.draw(st.sampled_from(["key", "key", "remove", "lane", "metadata", "whole", "bytes"]))
    if choice == "key":
        header[data.draw(st.sampled_from(HEADER_KEYS))] = data.draw(JSON_VALUES)
    elif choice == "remove":
        header.pop(data.draw(st.sampled_from(HEADER_KEYS)))
    elif choice == "lane":
        lane = header["map"]["lanes"][data.draw(st.integers(0, len(header["map"]["lanes"]) - 1))]
        lane[data.draw(st.sampled_from(sorted(lane)))] = data.draw(JSON_VALUES)
    elif choice == "metadata":
        key = data.draw(st.sampled_from(sorted(header["metadata"]) + ["route_roadblocks", "camera_images"]))
        header["metadata"][key] = data.draw(JSON_VALUES)
    elif choice == "whole":
        header = data.draw(JSON_VALUES)
    else:
        raw = data.draw(st.binary(max_size=40))
    path = write_entries(source["folder"] / "header.npz", header, source["arrays"],
                         raw_header=raw if raw is not None else json.dumps(header, allow_nan=True).encode())
    if loads_or_refuses(path) is not None:
        assert_usable(path)


@settings(max_examples=40)
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=3))
def test_truncated_or_corrupted_bytes_are_refused(source, cut, flips):
    data = bytearray(source["bytes"][: max(1, int(cut * len(source["bytes"])))] if cut < 1.0 else source["bytes"])
    for where, xor in flips:
        k = min(int(where * len(data)), len(data) - 1)
        data[k] ^= xor
    path = source["folder"] / "bytes.npz"
    path.write_bytes(bytes(data))
    scene = loads_or_refuses(path)
    if scene is not None:  # a flip in a spot nothing reads (zip comments, timestamps) still gives the scene
        assert scene.token == source["header"]["token"]


def test_a_zip_of_the_wrong_members_is_refused(source):
    path = source["folder"] / "members.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("header.npy", b"\x93NUMPY garbage")
        archive.writestr("ego_log.npy", source["bytes"][:100])
    assert loads_or_refuses(path) is None
