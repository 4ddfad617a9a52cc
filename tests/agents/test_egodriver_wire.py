"""w0sim's egodriver extension wire: Submit payloads, Describe, Plan, and the contract's poses and front camera."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from carla_driver_interface.geometry import Pose, optical_to_body
from carla_driver_interface.protocol import ShutterType

import agents.egodriver_wire as wire
from agents.egodriver_wire import (
    SessionWorld,
    WireError,
    decode_inputs,
    decode_plan,
    decode_plan_request,
    describe,
    encode_inputs,
    encode_plan,
    encode_plan_request,
    front_camera,
    pose_of,
    read_description,
    xy_heading,
)
from scenarios.generator import generate_scene
from sim.agent_input import AgentInput
from sim.envs.closed_loop_env import ClosedLoopEnv
from sim.envs.navsim_env import NavsimSceneEnv
from sim.render.camera import CameraConfig
from sim.state import AgentSlice, TrajectorySampling
from sim.world_view import WorldView

SLICE_FIELDS = ("x", "y", "heading", "vx", "vy", "valid", "length", "width", "height", "agent_type")


def one_shot(family: str = "straight") -> tuple[AgentInput, WorldView]:
    env = NavsimSceneEnv(scenes=[generate_scene(family, 3)], cameras=True, privileged=True)
    _, info = env.reset(seed=0)
    return info["agent_input"], info["world"]


def closed_loop_after_one_step(cameras: bool) -> tuple[AgentInput, WorldView]:
    env = ClosedLoopEnv(scenes=[generate_scene("intersection", 3)], cameras=cameras, privileged=True)
    env.reset(seed=0)
    *_, info = env.step(np.zeros((8, 3)))
    return info["agent_input"], info["world"]


def no_session(uuid: str) -> SessionWorld | None:
    return None


def unpack(payload: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return json.loads(str(arrays.pop("header"))), arrays


def repack(header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array(json.dumps(header)), **arrays)
    return buffer.getvalue()


def assert_same_array(found: np.ndarray, expected: np.ndarray) -> None:
    assert found.dtype == np.asarray(expected).dtype
    assert found.shape == np.asarray(expected).shape
    assert np.array_equal(found, expected)


def assert_same_slice(found: AgentSlice, expected: AgentSlice) -> None:
    assert found.track_ids == list(expected.track_ids)
    for name in SLICE_FIELDS:
        assert_same_array(getattr(found, name), getattr(expected, name))


def assert_same_map(found, expected) -> None:
    assert found.name == expected.name
    assert [lane.id for lane in found.lanes] == [lane.id for lane in expected.lanes]
    for got, lane in zip(found.lanes, expected.lanes):
        for name in ("centerline", "left_boundary", "right_boundary"):
            assert_same_array(getattr(got, name), getattr(lane, name))
        assert (got.speed_limit, got.lane_group, tuple(got.successors), tuple(got.predecessors), got.is_connector,
                got.traffic_light) == (lane.speed_limit, lane.lane_group, tuple(lane.successors),
                                       tuple(lane.predecessors), lane.is_connector, lane.traffic_light)
    assert [(a.id, a.kind) for a in found.areas] == [(a.id, a.kind) for a in expected.areas]
    assert all(got.polygon.equals_exact(area.polygon, 0.0) for got, area in zip(found.areas, expected.areas))
    assert len(found.stop_signs) == len(expected.stop_signs)


def assert_same_world(found: WorldView, expected: WorldView) -> None:
    assert_same_map(found.road_map, expected.road_map)
    assert found.route == list(expected.route)
    assert_same_array(found.ego_state, expected.ego_state)
    assert_same_slice(found.agents, expected.agents)
    if expected.agents_before is None:
        assert found.agents_before is None
    else:
        assert_same_slice(found.agents_before, expected.agents_before)
    assert (found.history_s, found.light_ids, found.step, found.time_s) == (
        expected.history_s, list(expected.light_ids), expected.step, expected.time_s)
    assert_same_array(found.light_status, np.asarray(expected.light_status))
    assert_same_array(found.ego_log, expected.ego_log)


# --- Submit: round trips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["straight", "intersection"])
def test_one_shot_inputs_and_world_round_trip(family):
    agent_input, world = one_shot(family)
    assert agent_input.cameras is not None and world.agents_before is not None  # what the test means to carry
    header, decoded_input, decoded_world, known = decode_inputs(
        encode_inputs("session-1", 1_500_000, agent_input, world, send_session_data=True), no_session)
    assert (header["session"], header["time_now_us"], header["command_text"]) == (
        "session-1", 1_500_000, agent_input.command_text)
    assert decoded_input == agent_input
    for name in ("ego_poses", "ego_velocity", "ego_acceleration", "driving_command", "cameras", "ego_state"):
        assert_same_array(getattr(decoded_input, name), getattr(agent_input, name))
    assert_same_world(decoded_world, world)
    assert known.road_map is decoded_world.road_map and known.ego_log is decoded_world.ego_log


@pytest.mark.parametrize("cameras", [True, False])
def test_closed_loop_world_with_objects_before_round_trips(cameras):
    agent_input, world = closed_loop_after_one_step(cameras)
    assert world.agents_before is not None and world.step > 0
    assert (agent_input.cameras is None) is not cameras
    _, decoded_input, decoded_world, _ = decode_inputs(
        encode_inputs("s", 500_000, agent_input, world, send_session_data=True), no_session)
    assert decoded_input == agent_input
    assert (decoded_input.cameras is None) is not cameras
    assert_same_world(decoded_world, world)


def test_world_view_without_objects_before_round_trips():
    agent_input, world = one_shot()
    first = WorldView(world.road_map, world.route, world.ego_state, world.agents, None, 0.0, world.light_ids,
                      world.light_status, world.ego_log, world.step, world.time_s)
    header, _, decoded_world, _ = decode_inputs(encode_inputs("s", 0, agent_input, first, True), no_session)
    assert header["world"]["before_track_ids"] is None
    assert decoded_world.agents_before is None
    assert_same_world(decoded_world, first)


def test_session_data_sent_once_is_reused_from_the_session():
    agent_input, world = one_shot()
    _, _, _, known = decode_inputs(encode_inputs("s", 0, agent_input, world, send_session_data=True), no_session)
    later = encode_inputs("s", 500_000, agent_input, world, send_session_data=False)
    header, arrays = unpack(later)
    assert header["map"] is None
    assert not any(name.startswith("map_") for name in arrays) and "world_ego_log" not in arrays
    asked = []

    def sessions(uuid: str) -> SessionWorld | None:
        asked.append(uuid)
        return known

    _, decoded_input, decoded_world, again = decode_inputs(later, sessions)
    assert asked == ["s"]
    assert again is known
    assert decoded_world.road_map is known.road_map and decoded_world.ego_log is known.ego_log
    assert decoded_input == agent_input
    assert_same_world(decoded_world, world)


def test_a_payload_with_the_map_replaces_what_the_session_sent_before():
    agent_input, world = one_shot()
    _, other_world = one_shot("intersection")
    stale = SessionWorld(other_world.road_map, other_world.ego_log)
    _, _, decoded_world, known = decode_inputs(encode_inputs("s", 0, agent_input, world, True), lambda uuid: stale)
    assert known is not stale
    assert_same_map(known.road_map, world.road_map)
    assert_same_world(decoded_world, world)


def test_world_view_without_the_session_map_is_refused():
    agent_input, world = one_shot()
    payload = encode_inputs("s", 500_000, agent_input, world, send_session_data=False)
    with pytest.raises(WireError) as err:
        decode_inputs(payload, no_session)
    assert str(err.value) == ("Submit payload has a world view but the session never sent its map (the first payload "
                              "of a session carries it)")


def test_no_world_decodes_to_none_and_hands_back_the_session():
    agent_input, world = one_shot()
    known = SessionWorld(world.road_map, world.ego_log)
    payload = encode_inputs("abc", 7, agent_input, None, send_session_data=True)
    header, arrays = unpack(payload)
    assert (header["world"], header["map"]) == (None, None)
    assert sorted(arrays) == ["input_cameras", "input_driving_command", "input_ego_acceleration",
                              "input_ego_poses", "input_ego_state", "input_ego_velocity"]
    header, decoded_input, decoded_world, found = decode_inputs(payload, lambda uuid: known if uuid == "abc" else None)
    assert decoded_world is None and found is known
    assert decoded_input == agent_input
    assert decode_inputs(payload, no_session)[2:] == (None, None)


# --- Submit: malformed payloads -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def payload() -> bytes:
    agent_input, world = one_shot()
    return encode_inputs("s", 0, agent_input, world, send_session_data=True)


def decode_error(data: bytes) -> str:
    with pytest.raises(WireError) as err:
        decode_inputs(data, no_session)
    return str(err.value)


def test_junk_is_not_an_archive():
    assert decode_error(b"junk") == "Submit payload is not a w0sim inputs archive (BadZipFile: File is not a zip file)"
    assert decode_error(b"") == "Submit payload is not a w0sim inputs archive (BadZipFile: File is not a zip file)"


def test_an_archive_that_unpacks_beyond_the_bound_is_refused_before_it_is_unpacked(payload, monkeypatch):
    header, arrays = unpack(payload)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, header=np.array(json.dumps(header)), **arrays, zeros=np.zeros(1_000_000))
    monkeypatch.setattr(wire, "MAX_PAYLOAD_BYTES", 1_000_000)
    assert len(buffer.getvalue()) < 1_000_000
    assert decode_error(buffer.getvalue()).startswith("Submit payload unpacks to ")
    assert decode_error(buffer.getvalue()).endswith(" bytes, over the bound 1000000")


def test_a_pickle_in_a_payload_is_never_loaded(payload):
    """An object array (a pickle: code a client could make the server run) is refused when the archive is read."""
    header, arrays = unpack(payload)
    evil = np.empty(1, dtype=object)
    evil[0] = {"run": "anything"}
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array(json.dumps(header)), **arrays, evil=evil)
    assert decode_error(buffer.getvalue()) == (
        "Submit payload is not a w0sim inputs archive (ValueError: Object arrays cannot be loaded when allow_pickle=False)")


def test_an_archive_without_header_is_not_an_inputs_archive(payload):
    _, arrays = unpack(payload)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    assert decode_error(buffer.getvalue()) == "Submit payload is not a w0sim inputs archive (KeyError: 'header')"


@pytest.mark.parametrize("change", [
    lambda h: h.pop("session"), lambda h: h.update(session=3), lambda h: h.update(time_now_us=1.5),
    lambda h: h.pop("command_text"), lambda h: h.clear()])
def test_header_needs_session_time_and_command_text(payload, change):
    header, arrays = unpack(payload)
    change(header)
    assert decode_error(repack(header, arrays)) == (
        "Submit payload header needs session (str), time_now_us (int) and command_text (str)")


def test_header_that_is_not_an_object(payload):
    _, arrays = unpack(payload)
    assert decode_error(repack([1, 2], arrays)) == (
        "Submit payload header needs session (str), time_now_us (int) and command_text (str)")


@pytest.mark.parametrize("name", ["input_ego_poses", "input_driving_command", "input_ego_state", "world_ego_state",
                                  "world_ego_log", "agents_vx", "before_valid", "world_light_status"])
def test_missing_array_is_named(payload, name):
    header, arrays = unpack(payload)
    del arrays[name]
    assert decode_error(repack(header, arrays)) == f"Submit payload has no array {name!r}"


def test_array_of_wrong_dimensions_is_named(payload):
    header, arrays = unpack(payload)
    arrays["input_ego_poses"] = arrays["input_ego_poses"].reshape(-1)
    assert decode_error(repack(header, arrays)) == (
        "Submit payload array 'input_ego_poses' has shape (12,) and dtype float64; expected shape (N, 3) of kind 'f'")
    header, arrays = unpack(payload)
    arrays["input_ego_velocity"] = arrays["input_ego_velocity"][:-1]
    assert decode_error(repack(header, arrays)) == (
        "Submit payload array 'input_ego_velocity' has shape (3, 2) and dtype float64; expected shape (4, 2) of kind 'f'")
    header, arrays = unpack(payload)
    arrays["world_ego_log"] = arrays["world_ego_log"][:, :3]
    assert decode_error(repack(header, arrays)).startswith("Submit payload array 'world_ego_log' has shape (")
    assert decode_error(repack(header, arrays)).endswith(", 3) and dtype float64; expected shape (N, 11) of kind 'f'")
    header, arrays = unpack(payload)
    arrays["world_light_status"] = np.zeros(len(header["world"]["light_ids"]) + 1, dtype=np.int8)
    assert decode_error(repack(header, arrays)) == (
        f"Submit payload array 'world_light_status' has shape ({len(header['world']['light_ids']) + 1},) and dtype "
        f"int8; expected shape ({len(header['world']['light_ids'])},) of kind 'iu'")


def test_array_of_wrong_kind_is_named(payload):
    header, arrays = unpack(payload)
    arrays["input_driving_command"] = arrays["input_driving_command"].astype(np.float64)
    assert decode_error(repack(header, arrays)) == (
        "Submit payload array 'input_driving_command' has shape (4,) and dtype float64; expected shape (4,) of kind 'iu'")
    header, arrays = unpack(payload)
    arrays["input_cameras"] = arrays["input_cameras"].astype(np.float32)
    assert decode_error(repack(header, arrays)) == (
        "Submit payload array 'input_cameras' has shape (4, 128, 256, 3) and dtype float32; expected shape (4, N, N, 3) "
        "of kind 'u'")


def test_track_ids_must_match_the_object_arrays(payload):
    header, arrays = unpack(payload)
    count = len(header["world"]["track_ids"])
    header["world"]["track_ids"] = header["world"]["track_ids"][:-1]
    assert decode_error(repack(header, arrays)) == (
        f"Submit payload array 'agents_x' has shape ({count},) and dtype float64; expected shape ({count - 1},) of kind "
        "'biuf'")
    header, arrays = unpack(payload)
    arrays["before_height"] = arrays["before_height"][:-1]
    assert decode_error(repack(header, arrays)) == (
        f"Submit payload array 'before_height' has shape ({count - 1},) and dtype float64; expected shape ({count},) of "
        "kind 'biuf'")


def test_track_ids_must_be_strings(payload):
    header, arrays = unpack(payload)
    header["world"]["before_track_ids"] = [1] * len(header["world"]["track_ids"])
    assert decode_error(repack(header, arrays)) == (
        "Submit payload header world.before_track_ids is missing or of the wrong type")


def test_incomplete_or_non_finite_world_header(payload):
    header, arrays = unpack(payload)
    del header["world"]["route"]
    assert decode_error(repack(header, arrays)) == "Submit payload header world.route is missing or of the wrong type"
    for key, value in (("route", "abc"), ("time_s", "soon"), ("history_s", float("inf")), ("step", True),
                       ("light_ids", [3])):
        header, arrays = unpack(payload)
        header["world"][key] = value
        assert decode_error(repack(header, arrays)) == (
            f"Submit payload header world.{key} is missing or of the wrong type")
    header, arrays = unpack(payload)
    header["time_now_us"] = True
    assert decode_error(repack(header, arrays)) == (
        "Submit payload header needs session (str), time_now_us (int) and command_text (str)")
    header, arrays = unpack(payload)
    header["world"] = [1]
    assert decode_error(repack(header, arrays)) == "Submit payload header world must be an object or null"


def test_world_ego_state_of_wrong_length(payload):
    header, arrays = unpack(payload)
    arrays["world_ego_state"] = arrays["world_ego_state"][:3]
    assert decode_error(repack(header, arrays)) == (
        "Submit payload array 'world_ego_state' has shape (3,) and dtype float64; expected shape (11,) of kind 'f'")


def test_broken_map_is_named(payload):
    header, arrays = unpack(payload)
    header["map"]["name"] = 5
    assert decode_error(repack(header, arrays)) == "Submit payload map: header name must be a string"


def test_payload_over_the_bound_is_refused_before_reading(payload, monkeypatch):
    monkeypatch.setattr(wire, "MAX_PAYLOAD_BYTES", len(payload) - 1)
    assert decode_error(payload) == f"Submit payload of {len(payload)} bytes is over the bound {len(payload) - 1}"
    monkeypatch.setattr(wire, "MAX_PAYLOAD_BYTES", len(payload))
    assert decode_inputs(payload, no_session)[2] is not None


# --- Describe -----------------------------------------------------------------------------------------------------


def test_describe_round_trip():
    data = describe("PDMClosed", True, False, 4, TrajectorySampling(num_poses=10, interval=0.4), "1.2.3")
    assert json.loads(data) == {"agent": "PDMClosed", "privileged": True, "cameras": False, "history_frames": 4,
                                "num_poses": 10, "interval_s": 0.4, "w0sim": "1.2.3"}
    assert read_description(data) == json.loads(data)
    whole = describe("X", False, True, 1, TrajectorySampling(num_poses=8, interval=1), "0")
    assert read_description(whole)["interval_s"] == 1


def read_error(data: bytes) -> str:
    with pytest.raises(WireError) as err:
        read_description(data)
    return str(err.value)


def test_read_description_errors():
    good = json.loads(describe("A", False, True, 4, TrajectorySampling(), "1"))
    assert read_error(b"not json") == "Describe answered something that is not JSON (Expecting value: line 1 column 1 (char 0))"
    assert read_error(b"\xff") == ("Describe answered something that is not JSON ('utf-8' codec can't decode byte 0xff "
                                   "in position 0: invalid start byte)")
    assert read_error(b"[1, 2]") == "Describe answered JSON that is not an object"
    for key, kind in [("agent", "str"), ("privileged", "bool"), ("cameras", "bool"), ("history_frames", "int"),
                      ("num_poses", "int"), ("interval_s", "number"), ("w0sim", "str")]:
        missing = {k: v for k, v in good.items() if k != key}
        assert read_error(json.dumps(missing).encode()) == f"Describe's answer has no {key!r} of type {kind}"
        wrong = {**good, key: "x" if kind != "str" else 1}
        assert read_error(json.dumps(wrong).encode()) == f"Describe's answer has no {key!r} of type {kind}"
    assert read_error(json.dumps({**good, "privileged": 1}).encode()) == "Describe's answer has no 'privileged' of type bool"
    for key, kind in [("history_frames", "int"), ("num_poses", "int"), ("interval_s", "number")]:  # JSON true is no number
        assert read_error(json.dumps({**good, key: True}).encode()) == f"Describe's answer has no {key!r} of type {kind}"


# --- Plan ---------------------------------------------------------------------------------------------------------


def test_plan_round_trip_is_float64_exact():
    poses = np.array([[0.1, 1e-17, math.pi], [123456.789012345, -2 / 3, -math.pi + 1e-15], [1e300, -0.0, 5e-324]])
    found = decode_plan(encode_plan(poses))
    assert found.dtype == np.float64 and found.shape == (3, 3)
    assert found.tobytes() == poses.tobytes()
    assert decode_plan(encode_plan(np.zeros((0, 3)))).shape == (0, 3)


def plan_error(data: bytes) -> str:
    with pytest.raises(WireError) as err:
        decode_plan(data)
    return str(err.value)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_decode_plan_errors():
    assert plan_error(encode_plan(np.zeros((8, 2)))) == (
        "Plan answered an array of shape (8, 2) and dtype float64; expected (N, 3) float64")
    assert plan_error(encode_plan(np.zeros(3))) == (
        "Plan answered an array of shape (3,) and dtype float64; expected (N, 3) float64")
    assert plan_error(npy(np.zeros((8, 3), dtype=np.float32))) == (
        "Plan answered an array of shape (8, 3) and dtype float32; expected (N, 3) float64")
    assert plan_error(b"junk") == (
        "Plan answered something that is not a .npy array (ValueError: This file contains pickled (object) data. If "
        "you trust the file you can load it unsafely using the `allow_pickle=` keyword argument or `pickle.load()`.)")
    assert plan_error(b"") == "Plan answered something that is not a .npy array (EOFError: No data left in file)"


def test_plan_request_round_trip():
    assert decode_plan_request(encode_plan_request("d3b07384-d9a0", 12_345_678_901)) == ("d3b07384-d9a0", 12_345_678_901)
    assert decode_plan_request(encode_plan_request("", 0)) == ("", 0)


def request_error(data: bytes) -> str:
    with pytest.raises(WireError) as err:
        decode_plan_request(data)
    return str(err.value)


def test_decode_plan_request_errors():
    assert request_error(b"junk") == (
        "Plan request is not {session, time_now_us} JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))")
    assert request_error(b"[1]") == (
        "Plan request is not {session, time_now_us} JSON (TypeError: list indices must be integers or slices, not str)")
    assert request_error(b'{"session": "a"}') == "Plan request is not {session, time_now_us} JSON (KeyError: 'time_now_us')"
    assert request_error(b"\xff") == ("Plan request is not {session, time_now_us} JSON (UnicodeDecodeError: 'utf-8' codec "
                                      "can't decode byte 0xff in position 0: invalid start byte)")
    assert request_error(b'{"session": 1, "time_now_us": 2}') == "Plan request needs session (str) and time_now_us (int)"
    assert request_error(b'{"session": "a", "time_now_us": 2.0}') == (
        "Plan request needs session (str) and time_now_us (int)")


# --- frames -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heading", [0.0, 1.0, -2.5, math.pi - 1e-9, -math.pi + 1e-9, 3.14159, -3.14159])
def test_pose_of_and_xy_heading_round_trip(heading):
    pose = pose_of(123.456, -78.9, heading)
    assert pose.position[2] == 0.0
    found = xy_heading(pose)
    assert found.dtype == np.float64 and found.shape == (3,)
    assert np.abs(found - [123.456, -78.9, heading]).max() <= 1e-12


@pytest.mark.parametrize("heading", [math.pi, -math.pi])
def test_heading_of_plus_minus_pi_round_trips_to_the_same_direction(heading):
    found = xy_heading(pose_of(-5.0, 2.0, heading))
    assert np.abs(found[:2] - [-5.0, 2.0]).max() <= 1e-12
    assert abs(math.remainder(found[2] - heading, 2 * math.pi)) <= 1e-12


def test_front_camera_declares_cam_f0():
    camera = front_camera()
    config = CameraConfig()
    assert camera.logical_id == camera.intrinsics.logical_id == "CAM_F0"
    assert camera.intrinsics.shutter_type == ShutterType.GLOBAL  # a rendered frame is exposed at one instant
    assert (camera.intrinsics.resolution_w, camera.intrinsics.resolution_h) == (256, 128)
    pinhole = camera.intrinsics.opencv_pinhole_param
    assert (pinhole.focal_length_x, pinhole.focal_length_y) == (config.focal, config.focal) == (206.0, 206.0)
    assert (pinhole.principal_point_x, pinhole.principal_point_y) == (128.0, 64.0)
    body = optical_to_body(Pose.from_proto(camera.rig_to_camera))
    # The contract's Vec3 holds float32: the mount comes back as float32 values.
    assert body.position.tolist() == np.array([1.5, 0.0, 1.6], dtype=np.float32).astype(np.float64).tolist()
    assert np.abs(body.rotation_matrix - np.eye(3)).max() <= 1e-12
    # The optical frame: x right, y down, z forward.
    optical = Pose.from_proto(camera.rig_to_camera).rotation_matrix
    assert np.abs(optical - [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]).max() <= 1e-12


def test_front_camera_of_a_turned_and_pitched_camera():
    config = CameraConfig(width=512, height=256, yaw=0.3, pitch=0.1, mount_x=2.0, mount_y=-0.5, mount_z=1.25)
    camera = front_camera(config)
    assert (camera.intrinsics.resolution_w, camera.intrinsics.resolution_h) == (512, 256)
    pinhole = camera.intrinsics.opencv_pinhole_param
    assert (pinhole.principal_point_x, pinhole.principal_point_y) == (256.0, 128.0)
    assert pinhole.focal_length_x == np.float32(config.focal)
    body = optical_to_body(Pose.from_proto(camera.rig_to_camera))
    assert body.position.tolist() == [2.0, -0.5, 1.25]
    c, s, cp, sp = math.cos(0.3), math.sin(0.3), math.cos(0.1), math.sin(0.1)
    expected = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    assert np.abs(body.rotation_matrix - expected).max() <= 1e-6  # float32 quaternion on the wire
    assert body.rotation_matrix[2, 0] < 0  # positive pitch looks down: the optical axis points below the horizon
