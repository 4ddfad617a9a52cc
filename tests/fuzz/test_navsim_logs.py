"""Fuzz: NAVSIM log pickles (garbage, mutated bytes, mutated frame fields, code payloads anywhere) either load as
checked frames or raise NavsimLogError naming the log, never another exception and never running code; a log that
loads gives a scene or a NavsimLogError."""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from scenarios.generator import generate_scene
from scenarios.navsim_log_writer import write_navsim_log
from scenarios.navsim_logs import NavsimLogError, filter_scenes, load_navsim_log, read_log_pickle, scene_from_frames
from sim.scene import Scene

WEIRD = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e9, -1.0, 0.0, 7, True, None, "", "x", b"\x00", [], {}, (),
         [np.nan] * 3, [1e300, 0.0, 0.0], [0.0] * 5, np.zeros(4), np.full(4, np.nan), np.array(["a", "b"]),
         np.zeros((2, 7)), np.full((1, 7), 1e9), [[1, True]], [(1, 2, 3)], {"a": 1}]
KEYS = ["token", "timestamp", "log_name", "map_location", "roadblock_ids", "ego2global_translation",
        "ego2global_rotation", "ego_dynamic_state", "traffic_lights", "driving_command", "anns", "w0sim"]
ANN_KEYS = ["gt_boxes", "gt_names", "gt_velocity_3d", "track_tokens"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_navsim")
    log = write_navsim_log(generate_scene("intersection", 3), root / "logs", root / "maps")
    return {"root": root, "log": log, "bytes": log.read_bytes(), "maps": root / "maps"}


def loads_or_refuses(data: bytes, folder) -> list[dict] | None:
    """The frames of a log holding `data`, or None for a NavsimLogError naming it; anything else fails the test."""
    path = folder / "fuzz.pkl"
    path.write_bytes(data)
    try:
        frames = load_navsim_log(path)
    except NavsimLogError as exc:
        assert str(path) in str(exc)
        return None
    assert isinstance(frames, list) and all(isinstance(f, dict) for f in frames)
    return frames


@given(st.binary(max_size=4096))
def test_garbage_bytes_are_refused(source, data):
    loads_or_refuses(data, source["root"])


@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=12),
       st.integers(0, 10**9), st.booleans())
def test_mutated_log_bytes_load_checked_or_are_refused(source, flips, cut, truncate):
    data = bytearray(source["bytes"])
    for position, value in flips:
        data[position % len(data)] = value
    if truncate:
        data = data[: cut % len(data)]
    loads_or_refuses(bytes(data), source["root"])


@settings(max_examples=30)
@given(st.data())
def test_mutated_fields_give_a_scene_or_a_clean_error(source, data):
    frames = pickle.loads(source["bytes"])
    for _ in range(data.draw(st.integers(1, 3))):
        frame = frames[data.draw(st.integers(0, len(frames) - 1))]
        key = data.draw(st.sampled_from(KEYS + [f"anns.{k}" for k in ANN_KEYS]))
        value = data.draw(st.sampled_from(WEIRD))
        target, name = (frame["anns"], key[5:]) if key.startswith("anns.") and isinstance(frame["anns"], dict) \
            else (frame, key)
        if data.draw(st.booleans()) and name in target:
            del target[name]
        else:
            target[name] = value
    checked = loads_or_refuses(pickle.dumps(frames), source["root"])
    event("log refused" if checked is None else "log loaded")
    if checked is None:
        return
    for window in filter_scenes(checked)[:1]:
        try:
            scene = scene_from_frames(window, source["maps"])
        except NavsimLogError:
            event("scene refused")
            continue
        event("scene built")
        assert isinstance(scene, Scene) and np.isfinite(scene.ego_log).all()


class _Payload:
    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@given(st.data())
def test_code_payloads_anywhere_never_run(source, data):
    marker = source["root"] / "ran"
    command = f"touch {marker}"
    payload = data.draw(st.sampled_from([
        _Payload(os.system, command), _Payload(builtins.exec, f"open({str(marker)!r}, 'w')"),
        _Payload(subprocess.getoutput, command), _Payload(builtins.eval, f"open({str(marker)!r}, 'w')")]))
    frames = pickle.loads(source["bytes"])
    frame = frames[data.draw(st.integers(0, len(frames) - 1))]
    where = data.draw(st.sampled_from(["top", "frame", "anns", "list"]))
    if where == "top":
        frames.append(payload)
    elif where == "frame":
        frame[data.draw(st.sampled_from(KEYS))] = payload
    elif where == "anns":
        frame["anns"][data.draw(st.sampled_from(ANN_KEYS))] = payload
    else:
        frame["roadblock_ids"] = [*frame["roadblock_ids"], payload]
    blob = bytearray(pickle.dumps(frames, protocol=data.draw(st.integers(2, 5))))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)), max_size=3))
    for position, value in flips:
        blob[position] = value
    try:
        read_log_pickle(bytes(blob), "payload.pkl")
    except NavsimLogError:
        pass
    else:
        assert flips, "a log holding a code payload was read"  # only flipped bytes may have destroyed the payload
    assert not marker.exists()
